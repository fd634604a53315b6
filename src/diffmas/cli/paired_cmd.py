"""`diffmas paired A B`: two `diffmas eval` runs on the same items, compared item by item: each accuracy with its
Wilson interval, the wins and losses of A against B, and the exact McNemar test (`diffmas.stats`), with the chance
rate of the items beside them. The honest test of "A beats B" when both answered the same test items."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _samples(run: Path) -> list[dict[str, Any]]:
    from diffmas.records import read_jsonl

    path = run / "samples.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(
            f"{run}: no samples.jsonl (give a `diffmas eval` output folder or its samples file)"
        )
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no graded items")
    return rows


def _rates(run: Path) -> dict[str, float]:
    """The chance and majority rates `diffmas eval` wrote beside the samples (summary.json), if any."""
    import json

    path = (run if run.is_dir() else run.parent) / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    return {
        k: summary[k] for k in ("chance_rate", "majority_rate") if isinstance(summary.get(k), int | float)
    }


def paired_command(
    a: Annotated[Path, typer.Argument(help="A `diffmas eval` output folder (or its samples.jsonl).")],
    b: Annotated[Path, typer.Argument(help="Another, on the same items.")],
) -> None:
    """Compare two eval runs on the same items: accuracies, wins/losses and the exact McNemar test."""
    from diffmas.metrics import wilson_interval
    from diffmas.stats import mcnemar_exact, pair_by_id

    try:
        rows_a, rows_b = _samples(a), _samples(b)
        paired = pair_by_id(rows_a, rows_b, names=(str(a), str(b)))
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    n = len(paired.ids)
    for name, flags in ((a, paired.a), (b, paired.b)):
        k = sum(flags)
        low, high = wilson_interval(k, n)
        typer.echo(f"{name}: {100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({k}/{n})")
    test = mcnemar_exact(paired.a, paired.b)
    typer.echo(
        f"A vs B on the same {n} items: {test.wins} wins, {test.losses} losses "
        f"({test.ties_correct} both right, {test.ties_wrong} both wrong); exact McNemar p = {test.p_value:.3g}"
    )
    rates = _rates(a)
    if rates:
        typer.echo(
            "reference rates of these items: "
            + ", ".join(f"{k.removesuffix('_rate')} {100 * v:.1f}%" for k, v in rates.items())
        )
