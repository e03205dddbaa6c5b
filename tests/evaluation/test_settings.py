"""The `eval:` block of conf/eval.yaml as tempo-eval builds it: the engine options."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tempo.config_error import ConfigError
from tempo.hydra_cli import build
from tempo.sampling.vllm_engine import VLLMSettings

EVAL_YAML = Path(__file__).parents[2] / "conf" / "eval.yaml"


def _eval_block(**changes):
    node = OmegaConf.load(EVAL_YAML).eval
    for key, value in changes.items():
        OmegaConf.update(node, key, value)
    return build("eval", node)


def test_the_shipped_block_selects_tempos_sampler_with_vllms_defaults():
    options = _eval_block()
    assert options.engine == "tempo" and options.vllm == VLLMSettings()
    vllm = _eval_block(engine="vllm", **{"vllm.dtype": "float32"})
    assert vllm.engine == "vllm" and vllm.vllm.dtype == "float32"


@pytest.mark.parametrize(
    ("change", "key", "allowed"),
    [
        ({"engine": "sglang"}, "eval.engine", "one of tempo, vllm"),
        ({"vllm.dtype": "fp8"}, "eval.vllm.dtype", "one of auto, float32"),
        ({"vllm.tensor_parallel_size": 0}, "eval.vllm.tensor_parallel_size", "an integer >= 1"),
    ],
)
def test_bad_engine_options_name_their_full_key(change, key, allowed):
    with pytest.raises(ConfigError) as err:
        _eval_block(**change)
    assert err.value.key == key and allowed in str(err.value)
    assert "\n" not in str(err.value)
