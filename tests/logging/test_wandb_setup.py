import pytest

from tempo.config_error import ConfigError
from tempo.logging.wandb_setup import (
    MAX_TAG_LENGTH,
    has_wandb_credentials,
    make_wandb_logger,
    resolve_mode,
    run_tags,
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    return tmp_path


def test_auto_is_offline_without_credentials(clean_env):
    assert not has_wandb_credentials()
    assert resolve_mode("auto") == "offline"


def test_auto_is_online_with_an_api_key(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_is_online_with_a_netrc_login(clean_env):
    netrc = clean_env / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"


def test_environment_mode_wins(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"


def test_unknown_mode_is_a_config_error(clean_env):
    with pytest.raises(ConfigError, match="logger.mode='sometimes'"):
        resolve_mode("sometimes")


def test_run_tags_name_task_model_and_method_then_extra():
    tags = run_tags("arithmetic", "tiny", "heuristic-linear", ["baseline", "v2"])
    assert tags == ["task:arithmetic", "model:tiny", "method:heuristic-linear", "baseline", "v2"]


def test_run_tags_drop_duplicates_and_empty_parts_keeping_order():
    tags = run_tags("gsm8k", None, " fixed ", ["b", "task:gsm8k", "a", "b", " a "])
    assert tags == ["task:gsm8k", "method:fixed", "b", "a"]
    assert run_tags("", "", None) == []


def test_run_tags_shorten_a_long_model_path_to_its_end():
    path = "/very/long/local/checkpoint/directory/" * 3 + "Qwen2.5-0.5B-Instruct"
    [tag] = run_tags(None, path, None)
    assert len(tag) == MAX_TAG_LENGTH
    assert tag.startswith("model:") and tag.endswith("Qwen2.5-0.5B-Instruct")


@pytest.mark.parametrize("bad", ["", "   ", "x" * (MAX_TAG_LENGTH + 1)])
def test_run_tags_refuse_user_tags_wandb_would_refuse(bad):
    with pytest.raises(ConfigError, match=r"logger\.tags="):
        run_tags("arithmetic", "tiny", "fixed", [bad])


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_make_wandb_logger_passes_grouping_without_starting_a_run(clean_env, mode):
    tags = run_tags("arithmetic", "tiny", "heuristic-linear", ["mine"])
    logger = make_wandb_logger(
        save_dir=str(clean_env),
        project="tempo-test",
        name="heuristic-linear-s0",
        group="compare_methods",
        mode=mode,
        tags=tags,
        job_type="heuristic-linear",
        config={"seed": 0},
    )
    init = logger._wandb_init  # what wandb.init will get (Lightning keeps it until first use)
    assert init["group"] == "compare_methods"
    assert init["job_type"] == "heuristic-linear"
    assert init["tags"] == tags
    assert init["mode"] == mode
    assert (init["name"], init["project"], init["dir"]) == (
        "heuristic-linear-s0",
        "tempo-test",
        str(clean_env),
    )
    assert init["config"] == {"seed": 0}
    assert logger._experiment is None  # no W&B run was started
    assert not (clean_env / "wandb").exists()
