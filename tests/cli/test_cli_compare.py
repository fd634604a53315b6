"""`diffmas compare` / `demo` print a table that fits an 80-column terminal; the full one is results.md."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from diffmas.cli.compare_cmd import terminal_table

RUNGS = ["single", "single_sft", "text_mas", "text_mas_sft", "latent_mas", "diffmas", "donor_latents"]


def _results() -> dict:
    methods = {
        rung: {"accuracy": 0.5 + i / 100, "ci_low": 0.123, "ci_high": 0.987, "n": 200, "mean_seconds": 12.345}
        for i, rung in enumerate(RUNGS)
    }
    methods["diffmas"]["chance_rate"] = 0.125
    methods["diffmas"]["majority_rate"] = 0.14
    return {"methods": methods, "n_test": 200}


def _render(table, width: int = 80) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    return buf.getvalue().splitlines()


def test_the_table_fits_80_columns_one_line_per_rung(tmp_path):
    for rung in RUNGS:  # paired columns need the rungs' samples
        (tmp_path / "eval" / rung).mkdir(parents=True)
        rows = [{"id": str(i), "correct": (i + len(rung)) % 3 == 0, "gold": "a"} for i in range(20)]
        (tmp_path / "eval" / rung / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = _render(terminal_table(_results(), tmp_path))
    assert max(len(line) for line in lines) <= 80
    for i, rung in enumerate(RUNGS):  # one row each: no cell wrapped onto a second line
        (row,) = [line for line in lines if line.startswith(f"│ {rung} ")]
        assert f"{50 + i:.1f} [12.3, 98.7]" in row and "12.35" in row
    assert any("each row against diffmas on the same items" in line for line in lines)
    assert any("chance 12.5%" in line for line in lines)


def test_without_samples_the_paired_cells_say_so(tmp_path):
    lines = _render(terminal_table(_results(), tmp_path))
    assert max(len(line) for line in lines) <= 80
    (row,) = [line for line in lines if line.startswith("│ single ")]
    assert "–" in row and "12.35" in row


@pytest.fixture
def restores_library_output(monkeypatch):
    """The CLI quiets the libraries process-wide: give the environment and transformers' settings back after."""
    from transformers.utils import logging as hf_logging

    for name in (
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_VERBOSITY",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    verbosity = hf_logging.get_verbosity()
    yield
    hf_logging.set_verbosity(verbosity)
    hf_logging.enable_progress_bar()


def test_demo_quick_on_a_tiny_model_prints_one_progress_line_per_eval_and_a_fitting_table(
    tmp_path, restores_library_output
):
    from typer.testing import CliRunner

    from diffmas.cli import app
    from diffmas.testing import tiny_backbone

    model = tmp_path / "tiny"
    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(model)
    tiny.tokenizer.save_pretrained(model)
    args = ["demo", "--quick", "--model", str(model), "--run-dir", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rungs = list(json.loads((tmp_path / "run" / "results.json").read_text())["methods"])
    for rung in rungs:
        assert sum(line.startswith(f"eval {rung} ") for line in lines) == 1, rung
        (row,) = [line for line in lines if line.startswith(f"│ {rung} ")]
        assert len(row) <= 80
    assert "results.md" in result.output
    assert "Loading weights" not in result.output
    assert "no usable checkpoint" not in result.output  # a rung never run starts quietly
