# Everyday targets (test, lint, format, typecheck), then the benchmarks B1-B5 of docs/performance.md: each prints
# its ratio last; `bench` prints one table for all of them. `make help` lists them.
PYTHON ?= .venv/bin/python
VENV_BIN ?= .venv/bin
MODEL ?= tiny
ARGS ?=

.PHONY: help setup test lint format typecheck check bench bench-smollm2 bench-quick profile dtype-check kernel-check

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## create .venv and install diffmas with its dev tools (scripts/setup.sh)
	bash scripts/setup.sh

test:  ## lint, the test suite (not `slow`), then the type checker: what CI runs (ARGS go to pytest)
	bash scripts/test.sh $(ARGS)

lint:  ## ruff check and ruff format --check
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check src tests bench scripts

format:  ## ruff format and the fixable ruff rules
	$(VENV_BIN)/ruff check --fix .
	$(VENV_BIN)/ruff format src tests bench scripts

typecheck:  ## mypy at the level of pyproject.toml [tool.mypy]
	$(VENV_BIN)/mypy

check: lint typecheck  ## both, without the tests

bench:  ## B1-B5 on MODEL (default: the tiny in-process model)
	$(PYTHON) -m bench.run_all --model $(MODEL) $(ARGS)

bench-smollm2:  ## B1-B5 on the embedded SmolLM2-135M (about half an hour on 2 CPU cores)
	$(PYTHON) -m bench.run_all --model smollm2-135m $(ARGS)

bench-quick:  ## minimal sizes: checks that every benchmark runs
	$(PYTHON) -m bench.run_all --model $(MODEL) --quick $(ARGS)

profile:  ## where one latent_mas rollout and one training step spend their time
	$(PYTHON) -m bench.profile_steps --model $(MODEL) $(ARGS)

dtype-check:  ## is bfloat16 faster than float32 on this CPU? (a few seconds)
	$(PYTHON) -m bench.dtype_check $(ARGS)

kernel-check:  ## does a batched single-token step cost what one row costs on this CPU? (under a minute)
	$(PYTHON) -m bench.kernel_check $(ARGS)
