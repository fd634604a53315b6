"""`diffmas diagnose <name> --model tiny`: every command runs on the in-process model and prints its figure with
the chance rate beside every accuracy."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from diffmas.cli import app

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, ["diagnose", *args, "--model", "tiny", "--task", "secret"])
    assert result.exit_code == 0, result.output
    return result.output


def test_probe_prints_a_row_per_layer_with_chance():
    out = _run("probe", "--n", "2", "--n-train", "8", "--latent-steps", "1")
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert len(rows) == 2  # the tiny model's two layers
    assert all(line.rstrip().endswith("%") for line in rows)
    assert "chance" in out and "majority" in out


def test_attention_prints_a_row_per_layer():
    out = _run("attention", "--n", "2", "--channel", "full")
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert len(rows) == 2 and "mean over layers" in out and "chance rate" in out


def test_donor_prints_paired_accuracies_with_chance():
    out = _run("donor", "--n", "4", "--batch-size", "4", "--max-new-tokens", "3")
    assert out.count("(chance 12.5%)") == 2 and "McNemar" in out


def test_grad_prints_writer_and_reader_norms():
    out = _run("grad", "--n", "2")
    full = next(line for line in out.splitlines() if line.startswith("grad_mode full"))
    control = next(line for line in out.splitlines() if line.startswith("grad_mode solver"))
    assert float(re.search(r"writer \|g\| (\S+)", full).group(1)) > 0
    assert float(re.search(r"writer \|g\| (\S+)", control).group(1)) == 0


def test_oracle_prints_plumbing_and_accuracy_before_and_after(tmp_path):
    out = _run("oracle", "--n", "2", "--steps", "1", "--batch-size", "2", "--max-new-tokens", "3",
               "--out", str(tmp_path / "run"))  # fmt: skip
    gap = float(re.search(r"max \|diff\| (\S+)", out).group(1))
    assert gap < 1e-5
    assert out.count("(chance 12.5%, n=2)") == 2


@pytest.mark.parametrize(
    "args",
    [["probe", "--agents", "7"], ["donor", "--task", "nonesuch"], ["attention", "--channel", "text"]],
)
def test_bad_input_is_a_one_line_error(args):
    result = runner.invoke(app, ["diagnose", *args, "--model", "tiny"])
    assert result.exit_code == 2
    assert "error:" in result.output


def test_readout_prints_a_row_per_latent_step_with_chance():
    out = _run("readout", "--n", "3", "--latent-steps", "2")
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert len(rows) == 2 and "chance of naming it among the options: 12.5%" in out and "any step" in out
