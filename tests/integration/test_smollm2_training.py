"""Train DiffMAS on the embedded SmolLM2 for a few steps, save, and answer with the adapter through `diffmas eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parents[2] / "configs" / "train_smollm2_ransom_note.yaml"


def test_diffmas_trains_on_smollm2_and_the_adapter_evaluates(tmp_path):
    from typer.testing import CliRunner

    from diffmas.cli import app

    runner = CliRunner()
    out = tmp_path / "train"
    result = runner.invoke(
        app,
        [
            "train", str(CONFIG), f"run.out={out}", "optim.steps=2", "optim.batch_size=2", "data.n_train=8",
            "optim.warmup_steps=0", "method.latent_steps=2", "run.eval_every=null", "run.eval_at_start=false", "run.eval_at_end=false", "run.tensorboard=false",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    manifest = json.loads((out / "adapter" / "diffmas_adapter.json").read_text())
    assert manifest["method"] == "diffmas" and manifest["base_model"] == "smollm2-135m"
    evaluation = runner.invoke(
        app,
        [
            "eval", "--task", "gym:ransom_note", "--method", "latent_mas", "--latent-steps", "2", "--limit", "2",
            "--max-new-tokens", "8", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "eval"),
        ],
    )  # fmt: skip
    assert evaluation.exit_code == 0, evaluation.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n"] == 2 and summary["config"]["adapter"] == str(out / "adapter")
