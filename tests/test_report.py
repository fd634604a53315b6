"""The report renderer on small synthetic run directories: paired columns, chance/majority floors, the
accuracy-vs-step plot and the seeds report (numbers checked in the markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffmas.metrics import accuracy
from diffmas.report import (
    Baselines,
    baselines,
    eval_curves,
    markdown_table,
    reference_rung,
    render_report,
    render_seeds_report,
    results_table,
)

N = 10
IDS = [f"q{i}" for i in range(N)]
GOLDS = ["yes"] * 6 + ["no"] * 4  # majority class 60%

# diffmas vs single: 8 wins, 0 losses (p = 2 * 0.5**8 = 0.0078); vs text_mas: 3 wins, 2 losses (p = 1)
LADDER = {
    "single": [0] * 10,
    "text_mas": [1, 1, 1, 1, 1, 0, 0, 0, 1, 1],
    "diffmas": [1] * 8 + [0, 0],
}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(
    root: Path,
    ladder: dict[str, list[int]],
    *,
    seed: int = 0,
    task: str = "navigate",
    ids: list[str] = IDS,
    golds: list[str] = GOLDS,
    trained: tuple[str, ...] = ("diffmas",),
    eval_rows: bool = True,
    extra_summary: dict | None = None,
    skip_samples: tuple[str, ...] = (),
) -> Path:
    """A run dir as `diffmas compare` writes it: results.json, eval/<rung>/samples.jsonl, train/<rung>/metrics.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    methods, training = {}, {}
    for rung, flags in ladder.items():
        methods[rung] = {**accuracy(bool(f) for f in flags), **(extra_summary or {})}
        if rung not in skip_samples:
            rows = [
                {"id": i, "correct": bool(f), "gold": g, "extracted": g if f else "?"}
                for i, f, g in zip(ids, flags, golds)
            ]
            _write_jsonl(root / "eval" / rung / "samples.jsonl", rows)
            (root / "eval" / rung / "summary.json").write_text(json.dumps(methods[rung]), encoding="utf-8")
        if rung in trained:
            metrics = [{"step": s, "loss": 2.0 / s} for s in range(1, 5)]
            if eval_rows:
                metrics += [{"step": s, "eval_accuracy": 0.2 * s, "eval_n": 5} for s in (0, 2, 4)]
            _write_jsonl(root / "train" / rung / "metrics.jsonl", metrics)
            training[rung] = {"step": [1, 2, 3, 4], "loss": [2.0, 1.0, 0.67, 0.5]}
    results = {
        "name": "toy",
        "model": "tiny",
        "task": task,
        "n_test": len(ids),
        "n_train": 16,
        "methods": methods,
        "sweeps": {},
        "training": training,
        "config": {"task": task, "task_args": {}, "test_split": "test", "seed": seed},
    }
    (root / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return root


def _squash(md: str) -> str:
    """The markdown with each table line unpadded ("| a | b |", "|---|---|"): what the table renders to, and
    the form the hand-joined tables had (tabulate pads the columns so the text reads as a table)."""
    out = []
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(c and set(c) <= set("-:") for c in cells):
                line = "|" + "---|" * len(cells)
            else:
                line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return "\n".join(out) + ("\n" if md.endswith("\n") else "")


def _row(md: str, rung: str) -> str:
    return next(line for line in _squash(md).splitlines() if line.startswith(f"| {rung} |"))


def test_table_has_paired_columns_against_diffmas(tmp_path):
    run = make_run(tmp_path / "run", LADDER)
    written = render_report(run)
    md = written["markdown"].read_text()
    assert "| method | accuracy (95% CI) | W/L vs diffmas | p (McNemar) | answer ppl |" in _squash(md)
    assert "| 8/0 | 0.008 |" in _row(md, "single")
    assert "| 3/2 | 1.000 |" in _row(md, "text_mas")
    assert "| (reference) | – |" in _row(md, "diffmas")
    assert _row(md, "diffmas").startswith("| diffmas | 80.0 [49.0, 94.3] |")
    # no chance_rate in the summaries: chance left out, majority from the samples' gold answers
    assert "\nmajority class 60.0% (n=10)\n" in md
    assert "chance" not in md
    for key in ("accuracy", "loss", "accuracy_vs_step"):
        assert written[key].is_file() and written[key].stat().st_size > 0
    assert "![accuracy_vs_step](accuracy_vs_step.png)" in md


def test_summary_rates_are_used_when_present(tmp_path):
    run = make_run(tmp_path / "run", LADDER, extra_summary={"chance_rate": 0.125, "majority_rate": 0.14})
    md = render_report(run)["markdown"].read_text()
    assert "\nchance 12.5%, majority class 14.0% (n=10)\n" in md


def test_missing_samples_give_dashes_and_mismatched_items_a_note(tmp_path):
    run = make_run(tmp_path / "run", LADDER, skip_samples=("single",))
    rows = [json.loads(x) for x in (run / "eval" / "text_mas" / "samples.jsonl").read_text().splitlines()]
    _write_jsonl(run / "eval" / "text_mas" / "samples.jsonl", rows[:-1])  # an interrupted evaluation
    results = json.loads((run / "results.json").read_text())
    table = results_table(results, run)
    assert "| 0.0 [0.0, 27.8] | – | – |" in _row(table, "single")
    assert "| – | – |" in _row(table, "text_mas")
    assert "Note: text_mas vs diffmas: not paired, item sets differ; 1 only in diffmas: 'q9'" in table


def test_torn_last_line_is_ignored(tmp_path):
    run = make_run(tmp_path / "run", LADDER)
    with (run / "eval" / "single" / "samples.jsonl").open("a") as f:
        f.write('{"id": "q10", "corr')
    md = render_report(run)["markdown"].read_text()
    assert "| 8/0 | 0.008 |" in _row(md, "single")


def test_reference_rung_choice(tmp_path):
    run = make_run(
        tmp_path / "run",
        {"single": LADDER["single"], "single_sft": LADDER["text_mas"], "text_mas_sft": LADDER["diffmas"]},
        trained=("single_sft", "text_mas_sft"),
    )
    results = json.loads((run / "results.json").read_text())
    assert reference_rung(results, run) == "text_mas_sft"  # no diffmas: the last trained rung
    assert reference_rung(results, run, "single") == "single"
    assert reference_rung(results, run, None) is None
    with pytest.raises(ValueError, match="not in this run"):
        reference_rung(results, run, "diffmas")
    table = results_table(results, run)
    assert "W/L vs text_mas_sft" in table
    assert "| 8/0 | 0.008 |" in _row(table, "single")
    # a control evaluated with another rung's adapter has a curve but no train/<rung> of its own: not a reference
    results["methods"]["donor"] = results["methods"]["single"]
    results["training"]["donor"] = results["training"]["text_mas_sft"]
    assert reference_rung(results, run) == "text_mas_sft"
    del results["methods"]["donor"], results["training"]["donor"]
    # explicit reference: the W/L are the reference's over the row
    md = render_report(run, reference="single")["markdown"].read_text()
    assert "W/L vs single" in md and "| 0/8 | 0.008 |" in _row(md, "text_mas_sft")
    # reference=None: the old table
    md = render_report(run, reference=None)["markdown"].read_text()
    assert "W/L" not in md and "McNemar" not in md


def test_no_trained_rung_no_paired_columns_and_no_step_plot(tmp_path):
    run = make_run(tmp_path / "run", {"single": LADDER["single"], "text_mas": LADDER["text_mas"]}, trained=())
    written = render_report(run)
    md = written["markdown"].read_text()
    assert "W/L" not in md and "accuracy_vs_step" not in written
    assert not (run / "accuracy_vs_step.png").exists()
    assert "majority class 60.0% (n=10)" in md


def test_step_plot_needs_eval_rows(tmp_path):
    run = make_run(tmp_path / "run", LADDER, eval_rows=False)
    written = render_report(run)
    assert "accuracy_vs_step" not in written and "loss" in written
    run2 = make_run(tmp_path / "run2", LADDER)
    curves = eval_curves(json.loads((run2 / "results.json").read_text()), run2)
    assert list(curves) == ["diffmas"]
    assert curves["diffmas"]["step"] == [0, 2, 4] and curves["diffmas"]["final_step"] == 4
    assert curves["diffmas"]["accuracy"] == pytest.approx([0.0, 0.4, 0.8]) and curves["diffmas"]["n"] == 5


def test_baseline_lines_are_drawn_and_labelled(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffmas.report import _draw_baselines

    fig, ax = plt.subplots()
    _draw_baselines(ax, Baselines(chance=0.125, majority=0.14, n=200))
    lines = {ln.get_label(): (round(ln.get_ydata()[0], 6), ln.get_linestyle()) for ln in ax.get_lines()}
    plt.close(fig)
    assert lines == {"chance 12.5%": (12.5, "--"), "majority class 14.0%": (14.0, "--")}
    assert Baselines(0.125, 0.14, 200).line() == "chance 12.5%, majority class 14.0% (n=200)"
    assert Baselines(None, None, None).line() == ""
    run = make_run(tmp_path / "run", LADDER)
    assert baselines(json.loads((run / "results.json").read_text()), run) == Baselines(None, 0.6, 10)


# ---------------------------------------------------------------------------- seeds
SEEDS = [
    {"single": [0] * 10, "diffmas": [1] * 8 + [0] * 2},  # 8/0, p = 0.0078
    {"single": [1] + [0] * 9, "diffmas": [1] * 7 + [0] * 3},  # 6/0, p = 2/64 = 0.031
    {"single": [0] * 9 + [1], "diffmas": [1] * 9 + [0]},  # 9/1, p = 22/1024 = 0.021
]


def _seed_runs(tmp_path: Path, **kw) -> list[Path]:
    return [make_run(tmp_path / f"seed{s}", ladder, seed=s, **kw) for s, ladder in enumerate(SEEDS)]


def test_seeds_report_numbers(tmp_path):
    written = render_seeds_report(_seed_runs(tmp_path), tmp_path / "out")
    md = _squash(written["markdown"].read_text())
    assert written["markdown"] == tmp_path / "out" / "seeds.md"
    assert written["plot"].is_file() and written["plot"].stat().st_size > 0
    assert "| method | mean | sd | seed 0 | seed 1 | seed 2 |" in md
    assert "| diffmas | 80.0 | 10.0 | 80.0 | 70.0 | 90.0 |" in md
    assert "| single | 6.7 | 5.8 | 0.0 | 10.0 | 10.0 |" in md
    assert "| single | 8/0 (p=0.008) | 6/0 (p=0.031) | 9/1 (p=0.021) |" in md
    assert "| single | 23 | 1 | 3/3 (100%) | +73.3 ± 11.5 |" in md
    assert "seeds share the test items, so the pooled counts are not independent" in md
    assert "majority class 60.0% (n=10)" in md
    assert "checked to be the same (ids and gold answers)" in md


def test_seeds_report_errors(tmp_path):
    a = make_run(tmp_path / "a", SEEDS[0], seed=0)
    b = make_run(tmp_path / "b", SEEDS[1], seed=1, task="date_understanding")
    with pytest.raises(ValueError, match="different tasks") as e:
        render_seeds_report([a, b], tmp_path / "out")
    assert "'navigate'" in str(e.value) and "'date_understanding'" in str(e.value)

    c = make_run(tmp_path / "c", SEEDS[1], seed=1, ids=IDS[:9] + ["q99"])
    with pytest.raises(ValueError, match="different test items") as e:
        render_seeds_report([a, c], tmp_path / "out")
    assert "'q9'" in str(e.value) and "'q99'" in str(e.value)

    d = make_run(tmp_path / "d", SEEDS[1], seed=1, golds=["no"] + GOLDS[1:])
    with pytest.raises(ValueError, match="gold answers of 1 ids differ.*'q0'"):
        render_seeds_report([a, d], tmp_path / "out")

    with pytest.raises(ValueError, match="at least two"):
        render_seeds_report([a], tmp_path / "out")
    with pytest.raises(ValueError, match="given twice"):
        render_seeds_report([a, a], tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        render_seeds_report([a, tmp_path / "nowhere"], tmp_path / "out")
    assert not (tmp_path / "out" / "seeds.md").exists()


def test_cli_report_one_dir_and_several(tmp_path):
    from diffmas.cli import app

    runner = CliRunner()
    runs = _seed_runs(tmp_path)
    res = runner.invoke(app, ["report", str(runs[0])])
    assert res.exit_code == 0, res.output
    assert (runs[0] / "results.md").is_file() and not (tmp_path / "out").exists()

    res = runner.invoke(app, ["report", *map(str, runs)])
    assert res.exit_code == 2 and "--out" in res.output

    res = runner.invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "seeds.md").is_file() and (tmp_path / "out" / "seeds.png").is_file()

    res = runner.invoke(app, ["report", str(runs[0]), "--reference", "none"])
    assert res.exit_code == 0 and "W/L" not in (runs[0] / "results.md").read_text()

    other = make_run(tmp_path / "other", SEEDS[1], seed=1, task="date_understanding")
    res = runner.invoke(app, ["report", str(runs[0]), str(other), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 1 and "different tasks" in res.output


# ---------------------------------------------------------------------------- the markdown tables, pinned
# The tables as the hand-joined renderer wrote them before the tables came from a library: the rendered table
# (header, cells, order, notes under it) must stay the same.
OLD_RESULTS_TABLE = (
    "| method | accuracy (95% CI) | W/L vs diffmas | p (McNemar) | answer ppl | self-consistency | tokens/item | "
    "s/item | trace len |\n|---|---|---|---|---|---|---|---|---|\n"
    "| single | 0.0 [0.0, 27.8] | 8/0 | 0.008 | 1.235 | – | 12.3 | 0.50 | – |\n"
    "| text_mas | 70.0 [39.7, 89.2] | 3/2 | 1.000 | 1.235 | – | 12.3 | 0.50 | – |\n"
    "| diffmas | 80.0 [49.0, 94.3] | (reference) | – | 1.235 | – | 12.3 | 0.50 | – |\n\n"
    "majority class 60.0% (n=10)\n\n"
    "W/L: test items `diffmas` answers correctly and the row's method does not / the reverse; p: exact two-sided "
    "McNemar test on those discordant items, one test per row (not corrected for the number of rows)."
)
OLD_PLAIN_TABLE = (
    "| method | accuracy (95% CI) | answer ppl | self-consistency | tokens/item | s/item | trace len |\n"
    "|---|---|---|---|---|---|---|\n"
    "| single | 0.0 [0.0, 27.8] | – | – | – | – | – |\n"
    "| text_mas | 70.0 [39.7, 89.2] | – | – | – | – | – |\n"
    "| diffmas | 80.0 [49.0, 94.3] | – | – | – | – | – |"
)
OLD_SEEDS_TABLES = (
    "| method | mean | sd | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|---|---|\n"
    "| single | 6.7 | 5.8 | 0.0 | 10.0 | 10.0 |\n| diffmas | 80.0 | 10.0 | 80.0 | 70.0 | 90.0 |\n"
    "| method | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|\n"
    "| single | 8/0 (p=0.008) | 6/0 (p=0.031) | 9/1 (p=0.021) |\n"
    "| method | wins of diffmas | losses of diffmas | seeds diffmas wins | mean Δ accuracy (pp) ± sd |\n"
    "|---|---|---|---|---|\n| single | 23 | 1 | 3/3 (100%) | +73.3 ± 11.5 |"
)


def test_results_table_pinned(tmp_path):
    extra = {"mean_perplexity": 1.23456, "mean_seconds": 0.5, "mean_generated_tokens": 12.34}
    run = make_run(tmp_path / "run", LADDER, extra_summary=extra)
    table = results_table(json.loads((run / "results.json").read_text()), run)
    assert _squash(table) == OLD_RESULTS_TABLE
    plain = make_run(tmp_path / "plain", LADDER)
    table = results_table(json.loads((plain / "results.json").read_text()))
    assert _squash(table) == OLD_PLAIN_TABLE
    assert table == (  # tabulate's GitHub format: the header row padded to the widest cell + 2
        "| method   | accuracy (95% CI)   | answer ppl   | self-consistency   | tokens/item   | s/item   | trace len   |\n"
        "|----------|---------------------|--------------|--------------------|---------------|----------|-------------|\n"
        "| single   | 0.0 [0.0, 27.8]     | –            | –                  | –             | –        | –           |\n"
        "| text_mas | 70.0 [39.7, 89.2]   | –            | –                  | –             | –        | –           |\n"
        "| diffmas  | 80.0 [49.0, 94.3]   | –            | –                  | –             | –        | –           |"
    )


def test_seeds_tables_pinned(tmp_path):
    md = render_seeds_report(_seed_runs(tmp_path), tmp_path / "out")["markdown"].read_text()
    assert "\n".join(line for line in _squash(md).splitlines() if line.startswith("|")) == OLD_SEEDS_TABLES
    assert "| single   | 6.7    | 5.8  | 0.0      | 10.0     | 10.0     |" in md  # "10.0" stays "10.0"


def test_markdown_table_keeps_cell_text():
    assert markdown_table(["a", "b"], [["10.0", "007"], ["x", "1e3"]]).splitlines()[2:] == [
        "| 10.0 | 007 |",
        "| x    | 1e3 |",
    ]
