"""`diffmas train` as a user meets it: plain captured output, the old `run.tensorboard` flag named in one line, a
rerun into a finished run refused with the way on, `--resume` with a larger budget, a missing tracker in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import diffmas.cli.train_cmd as train_cmd
from diffmas.cli import app
from diffmas.training import tracking

ASSET = Path(__file__).parents[1] / "assets" / "arith.jsonl"


@pytest.fixture
def plain_console(monkeypatch):
    """The command's console as a user's redirected output gets it (no forced colour or terminal from CI)."""
    for name in ("FORCE_COLOR", "TTY_INTERACTIVE", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(train_cmd, "console", Console())


def _config(tmp_path: Path, model: Path, run: str) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(
        f"model: {{name: {model}}}\n"
        f"data: {{task: {ASSET}, split: test, eval_split: null}}\n"
        "method: {latent_steps: 1, eval_max_new_tokens: 4}\n"
        "optim: {steps: 1, batch_size: 2, warmup_steps: 0}\n"
        f"run: {{out: {tmp_path / 'run'}, {run}}}\n"
    )
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["--verbose", *args], catch_exceptions=False)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_train_rerun_and_resume_with_a_larger_budget(tmp_path, tiny_llama_dir, plain_console):
    config = _config(tmp_path, tiny_llama_dir, "tensorboard: false")
    first = _invoke("train", str(config))
    assert first.exit_code == 0, first.output
    # no bar, no colour (stderr holds the libraries' bars, shown under --verbose)
    assert "\x1b" not in first.stdout and "\r" not in first.stdout
    lines = _lines(first.stdout)
    assert lines[0] == f"warning: {config}: run.tensorboard is deprecated: write run.report_to: none instead"
    assert lines[1].startswith("step=1/1 loss=")

    again = _invoke("train", str(config))
    assert again.exit_code == 2
    assert _lines(again.stdout)[1:] == [  # after the deprecation line
        f"error: {tmp_path / 'run'} already holds a training run, finished at step 1: to train it further, pass "
        "--resume with a larger optim.steps (e.g. optim.steps=2), or choose another run.out"
    ]

    more = _invoke("train", str(config), "--resume", "optim.steps=2")
    assert more.exit_code == 0, more.output
    assert "optim.steps 1 -> 2: the cosine learning-rate schedule now spans 2 steps" in more.stdout
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


def test_a_missing_tracker_is_one_line_before_training(tmp_path, monkeypatch, plain_console):
    monkeypatch.setattr(tracking, "available_trackers", lambda: ["tensorboard"])
    config = _config(tmp_path, tmp_path / "no-model-needed", "report_to: [tensorboard, mlflow]")
    result = _invoke("train", str(config))
    assert result.exit_code == 2
    assert _lines(result.stdout) == ["error: run.report_to: mlflow is not installed (pip install mlflow)"]
    assert not (tmp_path / "run").exists()
