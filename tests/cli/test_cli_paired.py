"""`diffmas paired A B`: two eval runs compared item by item (wins, losses, exact McNemar), with their rates."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from diffmas.cli import app
from diffmas.stats import mcnemar_exact

runner = CliRunner()


def _run_dir(path, correct: list[bool], chance: float | None = 0.25):
    path.mkdir()
    rows = [{"id": f"q{i}", "correct": c} for i, c in enumerate(correct)]
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if chance is not None:
        (path / "summary.json").write_text(
            json.dumps({"accuracy": 0.0, "chance_rate": chance, "majority_rate": 0.1})
        )
    return path


def test_paired_prints_accuracies_wins_losses_and_the_exact_test(tmp_path):
    a_flags = [True] * 9 + [False]
    b_flags = [True, False, False, False, False, False, False, False, False, True]
    a, b = _run_dir(tmp_path / "a", a_flags), _run_dir(tmp_path / "b", b_flags, None)
    result = runner.invoke(app, ["paired", str(a), str(b)])
    assert result.exit_code == 0, result.output
    test = mcnemar_exact(a_flags, b_flags)
    assert (test.wins, test.losses) == (8, 1)
    assert "90.0%" in result.output and "20.0%" in result.output
    assert (
        f"8 wins, 1 losses (1 both right, 0 both wrong); exact McNemar p = {test.p_value:.3g}"
        in result.output
    )
    assert "chance 25.0%, majority 10.0%" in result.output


def test_paired_refuses_different_item_sets_and_missing_runs_in_one_line(tmp_path):
    a = _run_dir(tmp_path / "a", [True, False])
    b = _run_dir(tmp_path / "b", [True, False, True])
    result = runner.invoke(app, ["paired", str(a), str(b)])
    assert result.exit_code == 1 and "item sets differ; 1 only in" in result.output
    result = runner.invoke(app, ["paired", str(a), str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no samples.jsonl" in result.output
    assert "Traceback" not in result.output
