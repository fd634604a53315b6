"""Benchmarks B1-B5 (docs/performance.md): each compares two variants side by side in one run and prints a ratio last.

Run one with `python -m bench.b1_latent_vs_text --model smollm2-135m`, or all with `python -m bench.run_all`
(`make bench`). Shared helpers live in `bench.common`.

OpenMP threads that wait actively for each other collapse on a shared, oversubscribed machine (measured here: a
single-token step of SmolLM2 took 1.5 s instead of 50 ms with 2 threads while other jobs ran). Waiting threads must
therefore sleep; the variable is read when torch's OpenMP runtime starts, so it is set before anything imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
