# lorapipe — set-up, demo and tests. Every target installs what it needs first (idempotent).
#   make demo   set up .venv and run the embedded demo end to end
#   make test   set up .venv, lint (ruff, mypy), then run the whole test suite (what CI runs)
#   make lint   ruff (E,F,I,B,UP,BLE,RUF100) over the tree and mypy over the engine (pyproject.toml)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorapipe-setup
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench lint clean

setup: $(STAMP)

# torch first: on a machine without CUDA, torch==2.13.0 is the CPU wheel (a bare `torch` would pull a
# multi-GB CUDA build); the package itself only asks for torch>=2.4, which that satisfies.
$(STAMP): pyproject.toml scripts/setup.sh
	@bash scripts/setup.sh "$(PY)" "$(VENV)"
	@touch $(STAMP)

demo: setup
	$(BIN)/lorapipe run examples/contact-extraction/pipeline.yaml --push contact-extraction

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/teacher_concurrency.py
	$(BIN)/python bench/train_throughput.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) examples/*/runs rebuilds .pytest_cache
