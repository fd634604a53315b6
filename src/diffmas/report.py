"""Reports of a comparison run: `results.md` (the paper-style table) and PNG plots, from `results.json` and the
per-item records of the run directory.

`diffmas report RUN_DIR` re-renders them, so a table can be regenerated without rerunning anything.
`diffmas report DIR1 DIR2 ... --out OUT` summarises the same ladder trained with several seeds (`seeds.md`).

Every rung answers the same test items, so the table compares each rung with a reference rung (DiffMAS) *paired*
on those items: wins/losses and the exact McNemar p from `eval/<rung>/samples.jsonl` (see `diffmas.stats`).
The chance and majority-class rates are printed and drawn, since an accuracy means little without its floor.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from diffmas.records import read_jsonl
from diffmas.stats import McNemar, majority_rate, mcnemar_exact, pair_by_id, preview_ids

AUTO = "auto"  # `reference=AUTO`: diffmas when present, else the last trained rung; `None`: no paired columns
PREFERRED_REFERENCE = "diffmas"

COLUMNS = (
    ("method", "method"),
    ("accuracy", "accuracy (95% CI)"),
    ("mean_perplexity", "answer ppl"),
    ("self_consistency", "self-consistency"),
    ("mean_generated_tokens", "tokens/item"),
    ("mean_seconds", "s/item"),
    ("mean_trace_length", "trace len"),
)
DASH = "–"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(p: float) -> str:
    """Three decimals, and `<0.001` below that (a reviewer reads the order of magnitude, not the digits)."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table with padded columns (readable as text too), cells as given.

    `disable_numparse` keeps every cell's text: tabulate would otherwise reformat "10.0" as "10" and right-align
    the numbers, and a cell like "0.008" must read as the table wrote it.
    """
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _accuracy_cell(s: dict[str, Any]) -> str:
    cell = f"{100 * s['accuracy']:.1f}"
    if s.get("ci_low") is not None:
        cell += f" [{100 * s['ci_low']:.1f}, {100 * s['ci_high']:.1f}]"
    return cell


# ---------------------------------------------------------------------------- reading a run directory
def load_results(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `diffmas compare` first")
    return json.loads(path.read_text(encoding="utf-8"))


def load_samples(run_dir: Path, rung: str) -> list[dict[str, Any]] | None:
    """The per-item rows of one rung's test evaluation, or None when the run dir has none."""
    path = run_dir / "eval" / rung / "samples.jsonl"
    return read_jsonl(path) if path.is_file() else None


def trained_rungs(results: dict[str, Any], run_dir: Path | None = None) -> list[str]:
    """Rungs (ladder order) that trained their own adapter: a `train/<rung>` directory in the run dir, or, when
    there is none at all (a bare results.json), a loss curve in results.json.

    The directory comes first so a control that reuses another rung's adapter (trained under that rung's name)
    is not taken for a trained rung of its own."""
    methods = list(results["methods"])
    if run_dir is not None:
        own = [m for m in methods if (run_dir / "train" / m).is_dir()]
        if own:
            return own
    curves = results.get("training") or {}
    return [m for m in methods if m in curves]


def reference_rung(
    results: dict[str, Any], run_dir: Path | None = None, reference: str | None = AUTO
) -> str | None:
    """The rung every other one is compared with: `diffmas` when present, else the last trained rung, else None.

    An explicit `reference` must be one of the rungs; `None` turns the paired comparison off.
    """
    methods = list(results["methods"])
    if reference is None:
        return None
    if reference != AUTO:
        if reference not in methods:
            raise ValueError(f"reference rung {reference!r} is not in this run: {methods}")
        return reference
    if PREFERRED_REFERENCE in methods:
        return PREFERRED_REFERENCE
    trained = trained_rungs(results, run_dir)
    return trained[-1] if trained else None


def paired_vs_reference(
    results: dict[str, Any], run_dir: Path, reference: str
) -> tuple[dict[str, McNemar | None], list[str]]:
    """McNemar of `reference` against every other rung (wins = reference right, rung wrong).

    A rung whose samples file is missing maps to None; one whose items differ from the reference's maps to None
    too, with a note saying why (the table must not silently pair different item sets).
    """
    ref_rows = load_samples(run_dir, reference)
    out: dict[str, McNemar | None] = {}
    notes: list[str] = []
    for rung in results["methods"]:
        if rung == reference:
            continue
        rows = load_samples(run_dir, rung)
        if ref_rows is None or rows is None:
            out[rung] = None
            continue
        try:
            paired = pair_by_id(ref_rows, rows, names=(reference, rung))
        except ValueError as e:
            out[rung] = None
            notes.append(f"{rung} vs {reference}: not paired, {e}")
            continue
        out[rung] = mcnemar_exact(paired.a, paired.b)
    if ref_rows is None:
        notes.append(f"no eval/{reference}/samples.jsonl: paired columns left empty")
    return out, notes


@dataclass(frozen=True)
class Baselines:
    """Accuracy floors of the test items: a uniform guess (`chance`) and the most common gold answer (`majority`)."""

    chance: float | None
    majority: float | None
    n: int | None

    def line(self) -> str:
        """`chance 12.5%, majority class 14.0% (n=200)`; empty when neither rate is known."""
        parts = []
        if self.chance is not None:
            parts.append(f"chance {_pct(self.chance)}")
        if self.majority is not None:
            parts.append(f"majority class {_pct(self.majority)}")
        if not parts:
            return ""
        return ", ".join(parts) + (f" (n={self.n})" if self.n is not None else "")


def _summary_value(results: dict[str, Any], key: str) -> tuple[float | None, int | None]:
    for s in results["methods"].values():
        if s.get(key) is not None:
            return float(s[key]), s.get("n")
    return None, None


def baselines(
    results: dict[str, Any], run_dir: Path | None = None, reference: str | None = None
) -> Baselines:
    """Chance and majority rates from the summaries; the majority rate falls back to the samples' `gold` field
    (the reference rung's samples first, else any rung's). Chance is left out when no summary has it: it needs
    the task's answer set, which the records do not hold."""
    chance, n_chance = _summary_value(results, "chance_rate")
    majority, n_major = _summary_value(results, "majority_rate")
    n = n_major if majority is not None else n_chance
    if majority is None and run_dir is not None:
        order = ([reference] if reference else []) + [m for m in results["methods"] if m != reference]
        for rung in order:
            rows = load_samples(run_dir, rung)
            golds = [r["gold"] for r in rows or [] if "gold" in r]
            if golds:
                majority, n = majority_rate(golds), len(golds)
                break
    if n is None and (chance is not None or majority is not None):
        n = results.get("n_test")
    return Baselines(chance, majority, n)


# ---------------------------------------------------------------------------- the table
def results_table(
    results: dict[str, Any], run_dir: str | Path | None = None, reference: str | None = AUTO
) -> str:
    """A markdown table with one row per method (ladder order), then the chance/majority line and any notes.

    With `run_dir`, two paired columns compare the reference rung with each other rung on the same items:
    `W/L vs <ref>` (items the reference gets right and the rung wrong / the reverse) and the exact McNemar p.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    ref = reference_rung(results, run_dir, reference) if run_dir is not None else None
    paired: dict[str, McNemar | None] = {}
    notes: list[str] = []
    if ref is not None and run_dir is not None:
        paired, notes = paired_vs_reference(results, run_dir, ref)
    titles = [title for _, title in COLUMNS]
    if ref is not None:
        titles[2:2] = [f"W/L vs {ref}", "p (McNemar)"]
    rows: list[list[str]] = []
    for name, s in results["methods"].items():
        cells = [name, _accuracy_cell(s)]
        if ref is not None:
            if name == ref:
                cells += ["(reference)", DASH]
            else:
                m = paired.get(name)
                cells += [f"{m.wins}/{m.losses}", fmt_p(m.p_value)] if m is not None else [DASH, DASH]
        sc = s.get("self_consistency")
        cells += [
            _fmt(s.get("mean_perplexity"), 3),
            _fmt(sc.get("majority_accuracy") if isinstance(sc, dict) else sc),
            _fmt(s.get("mean_generated_tokens"), 1),
            _fmt(s.get("mean_seconds")),
            _fmt(s.get("mean_trace_length"), 1),
        ]
        rows.append(cells)
    lines = [markdown_table(titles, rows)]
    base = baselines(results, run_dir, ref)
    extra = []
    if base.line():
        extra.append(base.line())
    if ref is not None:
        extra.append(
            f"W/L: test items `{ref}` answers correctly and the row's method does not / the reverse; "
            "p: exact two-sided McNemar test on those discordant items, one test per row (not corrected for "
            "the number of rows)."
        )
    extra += [f"Note: {n}" for n in notes]
    if extra:
        lines += [""] + [x for e in extra for x in (e, "")][:-1]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_baselines(ax, base: Baselines | None) -> None:
    """Dashed horizontal lines at the chance and majority-class rates, labelled in the legend."""
    if base is None:
        return
    if base.chance is not None:
        ax.axhline(100 * base.chance, ls="--", lw=1, color="0.45", label=f"chance {_pct(base.chance)}")
    if base.majority is not None:
        ax.axhline(
            100 * base.majority, ls="--", lw=1, color="#dd8452", label=f"majority class {_pct(base.majority)}"
        )


def plot_accuracy(results: dict[str, Any], path: Path, base: Baselines | None = None) -> Path:
    plt = _pyplot()
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
    _draw_baselines(ax, base)
    if base is not None and (base.chance is not None or base.majority is not None):
        ax.legend(fontsize=8, loc="upper left")
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
    plt = _pyplot()
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
    plt = _pyplot()
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


def eval_curves(results: dict[str, Any], run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per trained rung: the in-training held-out accuracy by step (`eval_accuracy` rows of metrics.jsonl) and
    the last logged step (where the final adapter, the one tested, was saved). Rungs without eval rows are left out."""
    out: dict[str, dict[str, Any]] = {}
    for rung in results["methods"]:
        path = run_dir / "train" / rung / "metrics.jsonl"
        if not path.is_file():
            continue
        rows = read_jsonl(path)
        evals = sorted(
            (r for r in rows if r.get("eval_accuracy") is not None and "step" in r), key=lambda r: r["step"]
        )
        if not evals:
            continue
        out[rung] = {
            "step": [r["step"] for r in evals],
            "accuracy": [float(r["eval_accuracy"]) for r in evals],
            "n": evals[-1].get("eval_n"),
            "final_step": max(r["step"] for r in rows if "step" in r),
        }
    return out


def plot_accuracy_vs_step(
    results: dict[str, Any], run_dir: Path, path: Path, base: Baselines | None = None
) -> Path | None:
    """Held-out accuracy during training, one line per trained rung, with that rung's final test accuracy marked
    (a star at its last step) and the chance/majority lines; None when no rung logged eval rows.

    In-training evaluation runs on the held-out split, not the test items; the star is the test number."""
    curves = eval_curves(results, run_dir)
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for rung, c in curves.items():
        n = f", n={c['n']}" if c["n"] is not None else ""
        (line,) = ax.plot(
            c["step"], [100 * a for a in c["accuracy"]], marker="o", ms=3, label=f"{rung} held-out{n}"
        )
        test = results["methods"][rung].get("accuracy")
        if test is not None:
            ax.plot(
                [c["final_step"]],
                [100 * test],
                marker="*",
                ms=12,
                ls="none",
                color=line.get_color(),
                label=f"{rung} final test {100 * test:.1f}%",
            )
    _draw_baselines(ax, base)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results.get('task', '')} · accuracy during training")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _train_items(n_train: int | None) -> str:
    """`n_train: null` in a ladder config means the whole training split."""
    return "the whole training split" if n_train is None else f"{n_train} training items"


def render_report(run_dir: str | Path, reference: str | None = AUTO) -> dict[str, Path]:
    """Write results.md and the plots of `run_dir` from its results.json and records; return the written paths.

    `reference` is the rung of the paired columns (`AUTO`: diffmas, else the last trained rung; None: none).
    """
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    ref = reference_rung(results, run_dir, reference)
    base = baselines(results, run_dir, ref)
    written = {"accuracy": plot_accuracy(results, run_dir / "accuracy.png", base)}
    for key, fn, name in (("sweep", plot_sweep, "sweep.png"), ("loss", plot_losses, "loss.png")):
        out = fn(results, run_dir / name)
        if out is not None:
            written[key] = out
    step_plot = plot_accuracy_vs_step(results, run_dir, run_dir / "accuracy_vs_step.png", base)
    if step_plot is not None:
        written["accuracy_vs_step"] = step_plot
    md = [
        f"# {results.get('name', run_dir.name)}",
        "",
        f"Model `{results.get('model')}`, task `{results.get('task')}`, {results.get('n_test')} test items, "
        f"{_train_items(results.get('n_train'))}. Generated {results.get('date', '')} on {results.get('machine', '')}.",
        "",
        results_table(results, run_dir, ref),
        "",
    ]
    md += [f"![{k}]({p.name})" for k, p in written.items()]
    (run_dir / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written["markdown"] = run_dir / "results.md"
    return written


# ---------------------------------------------------------------------------- several seeds
@dataclass
class _Run:
    dir: Path
    results: dict[str, Any]
    label: str = ""

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config") or {}


def _task_key(run: _Run) -> tuple[Any, ...]:
    cfg = run.config
    return (
        run.results.get("task"),
        json.dumps(cfg.get("task_args") or {}, sort_keys=True, default=str),
        cfg.get("test_split"),
    )


def _seed_labels(runs: list[_Run]) -> list[str]:
    """`seed <n>` from each config when the seeds are known and distinct, else the directory names."""
    seeds = [r.config.get("seed") for r in runs]
    if all(s is not None for s in seeds) and len(set(seeds)) == len(seeds):
        return [f"seed {s}" for s in seeds]
    names = [r.dir.name for r in runs]
    return names if len(set(names)) == len(names) else [str(r.dir) for r in runs]


def _check_same_experiment(runs: list[_Run]) -> None:
    """Seeds must differ only in the seed: the same task (and split, task args), model and test items."""
    keys = [_task_key(r) for r in runs]
    if len(set(keys)) > 1:
        listing = "; ".join(f"{r.dir}: task {k[0]!r} args {k[1]} split {k[2]!r}" for r, k in zip(runs, keys))
        raise ValueError(f"the run dirs hold different tasks: {listing}")
    models = [r.results.get("model") for r in runs]
    if len(set(models)) > 1:
        listing = "; ".join(f"{r.dir}: {m!r}" for r, m in zip(runs, models))
        raise ValueError(f"the run dirs hold different models: {listing}")


def _item_sets(runs: list[_Run], rungs: list[str]) -> dict[tuple[int, str], list[dict[str, Any]] | None]:
    """Every (run, rung)'s samples, after checking that each rung holds the same items, with the same golds, in
    every run dir (mismatches between rungs of one dir are left to the pairing, which notes them)."""
    samples = {(i, m): load_samples(r.dir, m) for i, r in enumerate(runs) for m in rungs}
    for m in rungs:
        first: tuple[Path, dict[Any, Any]] | None = None
        for i, run in enumerate(runs):
            rows = samples[(i, m)]
            if rows is None:
                continue
            golds = {row.get("id"): row.get("gold") for row in rows}
            if first is None:
                first = (run.dir, golds)
                continue
            dir0, golds0 = first
            only0, only1 = golds0.keys() - golds.keys(), golds.keys() - golds0.keys()
            if only0 or only1:
                raise ValueError(
                    f"the run dirs hold different test items in eval/{m}: "
                    f"{len(only0)} ids only in {dir0} ({preview_ids(only0)}), "
                    f"{len(only1)} only in {run.dir} ({preview_ids(only1)})"
                )
            differ = [k for k in golds if golds[k] != golds0[k]]
            if differ:
                raise ValueError(
                    f"the run dirs hold different test items in eval/{m}: the gold answers of {len(differ)} ids "
                    f"differ between {dir0} and {run.dir} ({preview_ids(differ)})"
                )
    if all(rows is None for rows in samples.values()):
        ns = {r.results.get("n_test") for r in runs}
        if len(ns) > 1:
            listing = "; ".join(f"{r.dir}: n_test {r.results.get('n_test')}" for r in runs)
            raise ValueError(f"the run dirs hold different test items: {listing}")
    return samples


def _sd(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def plot_seeds(
    rungs: list[str], per_seed: dict[str, list[float]], path: Path, title: str, base: Baselines | None = None
) -> Path:
    """Bars at the mean accuracy over seeds, error bars ± one sample sd, a dot per seed; chance/majority lines."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rungs)), 3.8))
    means = [100 * statistics.fmean(per_seed[m]) for m in rungs]
    sds = [100 * _sd(per_seed[m]) if len(per_seed[m]) > 1 else 0.0 for m in rungs]
    x = np.arange(len(rungs))
    colors = ["#c44e52" if m.startswith("diffmas") else "#4c72b0" for m in rungs]
    ax.bar(x, means, yerr=sds, capsize=4, color=colors, alpha=0.75)
    k = max(len(v) for v in per_seed.values())
    offsets = np.linspace(-0.2, 0.2, k) if k > 1 else np.zeros(1)
    for j, m in enumerate(rungs):
        vals = [100 * v for v in per_seed[m]]
        ax.scatter(
            x[j] + offsets[: len(vals)], vals, s=14, color="k", zorder=3, label="seeds" if j == 0 else None
        )
    _draw_baselines(ax, base)
    ax.set_xticks(x, rungs)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_seeds_report(
    run_dirs: Sequence[str | Path], out: str | Path, reference: str | None = AUTO
) -> dict[str, Path]:
    """Write `out/seeds.md` and `out/seeds.png` for one ladder run with several training seeds (a run dir each).

    Per rung: mean and sample sd of accuracy across seeds and every seed's value. Per seed: McNemar W/L and p of
    the reference rung against each other rung. Pooled: per-seed wins/losses summed and the share of seeds the
    reference wins. Raises ValueError when the dirs hold different tasks, models or test items.
    """
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise ValueError(f"a seeds report needs at least two run dirs, got {len(dirs)}")
    resolved = [d.resolve() for d in dirs]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"a run dir is given twice: {[str(d) for d in dirs]}")
    runs = [_Run(d, load_results(d)) for d in dirs]
    _check_same_experiment(runs)
    for run, label in zip(runs, _seed_labels(runs)):
        run.label = label
    first = runs[0]
    rungs = [m for m in first.results["methods"] if all(m in r.results["methods"] for r in runs)]
    dropped = sorted({m for r in runs for m in r.results["methods"]} - set(rungs))
    if not rungs:
        raise ValueError("the run dirs share no rung")
    common = {**first.results, "methods": {m: first.results["methods"][m] for m in rungs}}
    ref = reference_rung(common, first.dir, reference)
    samples = _item_sets(runs, rungs)
    base = baselines(common, first.dir, ref)
    accs = {m: [float(r.results["methods"][m]["accuracy"]) for r in runs] for m in rungs}
    labels = [r.label for r in runs]

    n_test = first.results.get("n_test")
    md = [
        f"# {first.results.get('name', 'seeds')}: {len(runs)} seeds",
        "",
        f"Model `{first.results.get('model')}`, task `{first.results.get('task')}`, {n_test} test items, "
        f"{_train_items(first.results.get('n_train'))}; {len(runs)} runs of the same ladder that differ in the "
        "training seed, graded on the same test items.",
        "",
    ]
    md += [f"- {r.label}: `{r.dir}`" for r in runs] + [""]
    if all(rows is None for rows in samples.values()):
        md += ["No eval/<rung>/samples.jsonl in these run dirs: the test items could not be checked, and no "
               "paired test is possible.", ""]  # fmt: skip
    else:
        md += ["The test items were checked to be the same (ids and gold answers) in every run dir.", ""]
    if dropped:
        md += [f"Left out (not in every run dir): {', '.join(dropped)}.", ""]
    md += [
        "## Accuracy across seeds",
        "",
        "Mean and sample standard deviation (n−1) of the test accuracy over seeds, in %, then each seed's value.",
        "",
    ]
    acc_rows: list[list[str]] = []
    for m in rungs:
        vals = accs[m]
        cells = [m, f"{100 * statistics.fmean(vals):.1f}", _fmt(100 * _sd(vals), 1)]
        cells += [f"{100 * v:.1f}" for v in vals]
        acc_rows.append(cells)
    md.append(markdown_table(["method", "mean", "sd", *labels], acc_rows))
    if base.line():
        md += ["", base.line()]
    md.append("")

    if ref is not None:
        others = [m for m in rungs if m != ref]
        tests: dict[str, list[McNemar | None]] = {m: [] for m in others}
        notes: list[str] = []
        for i, run in enumerate(runs):
            ref_rows = samples[(i, ref)]
            for m in others:
                rows = samples[(i, m)]
                if ref_rows is None or rows is None:
                    tests[m].append(None)
                    continue
                try:
                    paired = pair_by_id(ref_rows, rows, names=(ref, m))
                except ValueError as e:
                    tests[m].append(None)
                    notes.append(f"{run.label}, {m} vs {ref}: not paired, {e}")
                    continue
                tests[m].append(mcnemar_exact(paired.a, paired.b))
        md += [
            f"## Paired against `{ref}`, per seed",
            "",
            f"W/L: test items `{ref}` answers correctly and the row's method does not / the reverse, within one "
            "seed; p: exact two-sided McNemar test on those discordant items (one test per cell, not corrected "
            "for the number of cells).",
            "",
        ]
        per_seed = [[m] + [f"{t.wins}/{t.losses} (p={fmt_p(t.p_value)})" if t else DASH for t in tests[m]]
                    for m in others]  # fmt: skip
        md.append(markdown_table(["method", *labels], per_seed))
        md += [f"\nNote: {n}" for n in notes]
        md += [
            "",
            "## Pooled over seeds",
            "",
            "**The seeds share the test items, so the pooled counts are not independent**: every item is counted "
            "once per seed, and a method that is better on an item tends to be better on it under every seed. "
            "The summed wins and losses describe the runs; they are not a sample for a significance test (no "
            "p-value is computed from them). Read the per-seed tests and the spread across seeds instead.",
            "",
        ]
        pooled: list[list[str]] = []
        for m in others:
            done = [t for t in tests[m] if t is not None]
            if not done:
                pooled.append([m, DASH, DASH, DASH, DASH])
                continue
            wins, losses = sum(t.wins for t in done), sum(t.losses for t in done)
            won = sum(t.wins > t.losses for t in done)
            deltas = [100 * (a - b) for a, b in zip(accs[ref], accs[m])]
            delta = f"{statistics.fmean(deltas):+.1f} ± {_fmt(_sd(deltas), 1)}"
            pooled.append([m, str(wins), str(losses), f"{won}/{len(done)} ({won / len(done):.0%})", delta])
        headers = [
            "method",
            f"wins of {ref}",
            f"losses of {ref}",
            f"seeds {ref} wins",
            "mean Δ accuracy (pp) ± sd",
        ]
        md.append(markdown_table(headers, pooled))
        md += [
            "",
            f"Seeds {ref} wins: seeds where it answers more of the discordant items correctly than the other "
            "method (wins > losses). Δ accuracy: the reference's accuracy minus the method's, per seed.",
            "",
        ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = (
        f"{first.results.get('task', '')} · {first.results.get('model', '')} ({len(runs)} seeds, mean ± sd)"
    )
    written = {"plot": plot_seeds(rungs, accs, out / "seeds.png", title, base)}
    md.append(f"![seeds]({written['plot'].name})")
    (out / "seeds.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    written["markdown"] = out / "seeds.md"
    return written
