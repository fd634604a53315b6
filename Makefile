# Benchmarks of issue 6 (B1-B5). Each prints its ratio last; `bench` prints one table for all of them.
PYTHON ?= .venv/bin/python
MODEL ?= tiny
ARGS ?=

.PHONY: bench bench-smollm2 bench-quick profile dtype-check kernel-check

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
