"""What does a batched single-token step cost on this CPU? One linear layer's forward at 1, 2, 4, 8, 16 and 256
rows, with its weights cycled through a working set larger than the caches (as in a decode step, which reads every
weight of the model once), against the machine's streaming read bandwidth.

A single-token step of a small model is weight-read bound: in principle 8 rows cost about what 1 row costs, which
is where B4's batching gain (target >= 3x at batch 8) has to come from. Whether the BLAS library delivers that is a
property of the CPU and the library: on the AVX2 EPYC of docs/performance.md, MKL's matrix-vector kernel (1 row)
reads the weights at about 7 GB/s and its matrix-matrix kernel (2-16 rows) at 3-4 GB/s, so a batch-8 step costs
about twice a batch-1 step. 256 rows (a prompt prefill's shape) shows the compute-bound end.
`python -m bench.kernel_check` answers it for the machine at hand in about a minute.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch

from bench.common import configure_threads, median, time_interleaved


def read_bandwidth(megabytes: int, repeats: int) -> float:
    """Bytes per second of `tensor.sum()` over a buffer far larger than the caches (a streaming read)."""
    buf = torch.ones(megabytes * 2**20 // 4)
    times = time_interleaved({"sum": lambda: buf.sum()}, repeats)
    return buf.numel() * 4 / median(times["sum"])


def weight_set(d_in: int, d_out: int, working_set_mb: int) -> list[torch.Tensor]:
    """Weights of one shape filling `working_set_mb`: cycling through them, nothing stays cached between uses."""
    gen = torch.Generator().manual_seed(0)
    count = max(1, working_set_mb * 2**20 // (d_in * d_out * 4))
    return [torch.randn(d_out, d_in, generator=gen) for _ in range(count)]


def linear_sweep(rows: int, weights: list[torch.Tensor], swapped: bool = False) -> Callable[[], None]:
    """A call that runs one linear of `rows` rows over each of `weights` once.

    `swapped` computes the same product as `(W @ x.T).T`: the weight becomes the left operand, which sends the
    BLAS library down another kernel (a probe of the kernel choice, not something the library does)."""
    x = torch.randn(rows, weights[0].shape[1], generator=torch.Generator().manual_seed(rows))

    def linear() -> None:
        for w in weights:
            torch.nn.functional.linear(x, w)

    def weight_on_the_left() -> None:
        for w in weights:
            torch.mm(w, x.t()).t()

    return weight_on_the_left if swapped else linear


def run(
    rows: tuple[int, ...] = (1, 2, 4, 8, 16, 256),
    d_in: int = 576,
    d_out: int = 1536,
    working_set_mb: int = 256,
    repeats: int = 5,
) -> list[str]:
    bandwidth = read_bandwidth(max(working_set_mb, 64), repeats)
    lines = [
        f"linear {d_in} -> {d_out}, fp32, weights cycled through {working_set_mb} MiB "
        f"({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)",
        f"streaming read bandwidth (tensor.sum): {bandwidth / 1e9:.1f} GB/s",
    ]
    weights = weight_set(d_in, d_out, working_set_mb)  # shared: every variant reads the same bytes
    calls = {}
    for n in rows:
        calls[str(n)] = linear_sweep(n, weights)
        calls[f"{n} swapped"] = linear_sweep(n, weights, swapped=True)
    times = time_interleaved(calls, repeats)
    per_weight = {name: median(t) / len(weights) for name, t in times.items()}
    weight_bytes = d_in * d_out * 4
    for n in rows:
        t, t_swapped = per_weight[str(n)], per_weight[f"{n} swapped"]
        lines.append(
            f"{n:>4} rows  {t * 1e6:8.1f} us per weight  weights read at {weight_bytes / t / 1e9:5.1f} GB/s  "
            f"{2 * n * weight_bytes / 4 / t / 1e9:6.1f} GFLOPS  cost vs 1 row {t / per_weight[str(rows[0])]:5.2f}x  "
            f"(W @ x.T).T {t_swapped * 1e6:8.1f} us"
        )
    widest = rows[-1] if 8 not in rows else 8
    lines.append(
        f"ROWS RATIO {per_weight[str(widest)] / per_weight[str(rows[0])]:.2f}x "
        f"({widest} rows vs {rows[0]}; near 1 when a step is weight-read bound and the kernel streams)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--d-in", type=int, default=576, help="input features (default: SmolLM2-135M's hidden size)"
    )
    p.add_argument(
        "--d-out", type=int, default=1536, help="output features (default: SmolLM2-135M's MLP width)"
    )
    p.add_argument("--quick", action="store_true", help="small shapes: checks that it runs")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    if args.quick:
        lines = run(rows=(1, 2), d_in=32, d_out=64, working_set_mb=1, repeats=1)
    else:
        lines = run(d_in=args.d_in, d_out=args.d_out, repeats=args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
