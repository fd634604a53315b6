"""Run B1-B5 one after another (never two at once) and print one table: id, what, measured ratio, target, verdict.

python -m bench.run_all                       # tiny in-process model
python -m bench.run_all --model smollm2-135m  # the embedded SmolLM2
python -m bench.run_all --quick               # minimal sizes: checks that everything runs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import b1_latent_vs_text, b2_latent_vs_single, b3_train_step, b4_batching, b5_memory
from bench.common import DTYPES, BenchResult, configure_threads, environment, set_bench_dtype

BENCHMARKS: dict[str, Callable[..., BenchResult]] = {
    "B1": b1_latent_vs_text.run,
    "B2": b2_latent_vs_single.run,
    "B3": b3_train_step.run,
    "B4": b4_batching.run,
    "B5": b5_memory.run,
}


def run_all(
    model: str = "tiny",
    quick: bool = False,
    only: Sequence[str] | None = None,
    repeats: int | None = None,
) -> list[BenchResult]:
    """Run the chosen benchmarks in order, printing each one's measurements as it finishes."""
    results = []
    for bench_id in only or BENCHMARKS:
        result = BENCHMARKS[bench_id](model=model, repeats=repeats, quick=quick)
        result.print()
        print(flush=True)
        results.append(result)
    return results


def print_table(results: Sequence[BenchResult], model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    env = environment()
    table = Table(
        title=f"diffmas benchmarks on {model} ({env['date']}, {env['cores']} cores, "
        f"{env['torch_threads']} torch threads, {env['dtype']}, GPU: {env['gpu']})"
    )
    for col in ("id", "what", "measured ratio", "target", "result"):
        table.add_column(col, overflow="fold")
    for r in results:
        verdict = f"[green]{r.verdict}[/green]" if r.passed else f"[red]{r.verdict}[/red]"
        measured = f"{r.ratio:.2f}x ({r.ratio_label})" + (f"; {r.note}" if r.note else "")
        table.add_row(r.id, r.what, measured, r.target, verdict + (" (quick)" if r.quick else ""))
    Console(width=160).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="tiny", help="tiny | tiny-qwen2 | smollm2-135m | anything load_backbone takes"
    )
    p.add_argument("--quick", action="store_true", help="minimal sizes: checks the plumbing, not the targets")
    p.add_argument("--only", default=None, help="comma-separated ids, e.g. B1,B3")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="backbone dtype (default float32)")
    p.add_argument("--json", type=Path, default=None, help="also write all results as JSON here")
    args = p.parse_args(argv)
    only = [x.strip().upper() for x in args.only.split(",")] if args.only else None
    unknown = set(only or ()) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark ids {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    configure_threads(args.threads)
    set_bench_dtype(args.dtype)
    results = run_all(args.model, args.quick, only, args.repeats)
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n", encoding="utf-8")
    print_table(results, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
