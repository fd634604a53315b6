"""Reports of a comparison run: `results.md` (the paper-style table) and PNG plots, from `results.json` alone.

`diffmas report RUN_DIR` re-renders them, so a table can be regenerated without rerunning anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

COLUMNS = (
    ("method", "method"),
    ("accuracy", "accuracy (95% CI)"),
    ("mean_perplexity", "answer ppl"),
    ("self_consistency", "self-consistency"),
    ("mean_generated_tokens", "tokens/item"),
    ("mean_seconds", "s/item"),
    ("mean_trace_length", "trace len"),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _accuracy_cell(s: dict[str, Any]) -> str:
    cell = f"{100 * s['accuracy']:.1f}"
    if s.get("ci_low") is not None:
        cell += f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
    return cell


def results_table(results: dict[str, Any]) -> str:
    """A markdown table with one row per method (ladder order), then one per sweep point."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    for name, s in results["methods"].items():
        cells = [name, _accuracy_cell(s)]
        sc = s.get("self_consistency")
        cells += [
            _fmt(s.get("mean_perplexity"), 3),
            _fmt(sc.get("majority_accuracy") if isinstance(sc, dict) else sc),
            _fmt(s.get("mean_generated_tokens"), 1),
            _fmt(s.get("mean_seconds")),
            _fmt(s.get("mean_trace_length"), 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    acc = [100 * results["methods"][n]["accuracy"] for n in names]
    lows, highs = [], []
    for n, a in zip(names, acc):
        s = results["methods"][n]
        lows.append(a - 100 * s.get("ci_low", a / 100))
        highs.append(100 * s.get("ci_high", a / 100) - a)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 3.6))
    colors = ["#c44e52" if n.startswith("diffmas") else "#4c72b0" for n in names]
    ax.bar(names, acc, yerr=[lows, highs], capsize=4, color=colors)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{results.get('task', '')} · {results.get('model', '')} (n={results.get('n_test', '?')}, 95% CI)"
    )
    ax.set_ylim(0, 100)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(results: dict[str, Any], path: Path) -> Path | None:
    """Accuracy against the swept value, one line per swept method."""
    sweeps = results.get("sweeps") or {}
    if not sweeps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, points in sweeps.items():
        xs = [p["value"] for p in points]
        ys = [100 * p["accuracy"] for p in points]
        ax.plot(xs, ys, marker="o", label=label)
    first = next(iter(sweeps.values()))
    ax.set_xlabel(first[0]["key"] if first else "value")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_losses(results: dict[str, Any], path: Path) -> Path | None:
    """Training loss per optimizer step for every trained method."""
    curves = {m: c for m, c in (results.get("training") or {}).items() if c.get("loss")}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, curve in curves.items():
        ax.plot(curve["step"], curve["loss"], label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _train_items(n_train: int | None) -> str:
    """`n_train: null` in a ladder config means the whole training split."""
    return "the whole training split" if n_train is None else f"{n_train} training items"


def render_report(run_dir: str | Path) -> dict[str, Path]:
    """Write results.md and the plots of `run_dir` from its results.json; return the written paths."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: run `diffmas compare` first")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    written = {"accuracy": plot_accuracy(results, run_dir / "accuracy.png")}
    for key, fn, name in (("sweep", plot_sweep, "sweep.png"), ("loss", plot_losses, "loss.png")):
        out = fn(results, run_dir / name)
        if out is not None:
            written[key] = out
    md = [
        f"# {results.get('name', run_dir.name)}",
        "",
        f"Model `{results.get('model')}`, task `{results.get('task')}`, {results.get('n_test')} test items, "
        f"{_train_items(results.get('n_train'))}. Generated {results.get('date', '')} on {results.get('machine', '')}.",
        "",
        results_table(results),
        "",
    ]
    md += [f"![{k}]({p.name})" for k, p in written.items()]
    (run_dir / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written["markdown"] = run_dir / "results.md"
    return written
