"""Is half precision faster than float32 on this CPU? One linear layer of Qwen2.5-0.5B's MLP (896 -> 4864), forward
and backward, float32 vs bfloat16, interleaved; prints bf16/fp32 time ratios (below 1 = bf16 is faster).

Whether bf16 pays depends on the CPU, not on the model: with AMX or AVX-512 bf16 torch runs native kernels (a
SmolLM2 prefill 4.3x faster than fp32 on an AMX Xeon), without them it emulates bf16 and is slower than fp32.
`python -m bench.dtype_check` answers it for the machine at hand in a few seconds.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import configure_threads, median, time_interleaved
from diffmas.backbones import cpu_has_native


def linear_pass(dtype: torch.dtype, rows: int, d_in: int, d_out: int, backward: bool):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(d_out, d_in, generator=gen).to(dtype)
    x = torch.randn(rows, d_in, generator=gen).to(dtype).requires_grad_(backward)
    grad = torch.randn(rows, d_out, generator=gen).to(dtype)

    def call() -> None:
        y = torch.nn.functional.linear(x, weight)
        if backward:
            y.backward(grad)
            x.grad = None

    return call


def run(
    rows: tuple[int, ...] = (1, 8, 300), repeats: int = 3, d_in: int = 896, d_out: int = 4864
) -> list[str]:
    lines = [
        f"native bf16 matmuls on this CPU: {cpu_has_native(torch.bfloat16)} "
        f"({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    ]
    worst = 0.0
    for n in rows:
        for backward in (False, True):
            calls = {
                str(dt): linear_pass(dt, n, d_in, d_out, backward) for dt in (torch.float32, torch.bfloat16)
            }
            times = time_interleaved(calls, repeats)
            fp32, bf16 = median(times["torch.float32"]), median(times["torch.bfloat16"])
            worst = max(worst, bf16 / fp32)
            what = "forward+backward" if backward else "forward"
            lines.append(
                f"{n:>4} rows {what:<16} fp32 {fp32 * 1e3:8.2f} ms  bf16 {bf16 * 1e3:8.2f} ms  "
                f"bf16/fp32 {bf16 / fp32:6.2f}x"
            )
    lines.append(f"DTYPE RATIO {worst:.2f}x (slowest bf16/fp32 ratio; above 1 means use float32 here)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one small shape: checks that it runs")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    lines = run(rows=(2,), repeats=1, d_in=32, d_out=64) if args.quick else run(repeats=args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
