"""The training progress bar: drawn on a terminal (steps with loss, tokens/s and ETA; the held-out evaluation's
items), absent from captured or redirected output, counting the right totals either way."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from diffmas.evaluation import answer_items
from diffmas.terminal import RunProgress, progress_enabled
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _cfg(out: Path, steps: int = 3) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": "test", "n_eval": 5},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 4},
            "optim": {"steps": steps, "batch_size": 2, "lr": 5e-3, "warmup_steps": 1},
            "run": {"out": str(out), "save_every": 100, "report_to": "none", "eval_batch_size": 2},
        }
    )


def _run(out: Path, console: Console) -> DiffMASTrainer:
    trainer = DiffMASTrainer(_cfg(out), backbone=tiny_backbone("llama"), console=console)
    trainer.setup()
    trainer.train()
    return trainer


def test_a_terminal_gets_a_bar_that_counts_steps_and_evaluated_items(tmp_path):
    screen = io.StringIO()
    trainer = _run(tmp_path / "run", Console(file=screen, force_terminal=True, width=120))
    p = trainer.progress
    assert p.enabled
    assert (p.steps, p.done) == (3, 3)
    assert (p.eval_total, p.eval_done) == (5, 5)  # 5 items in rounds of 2: 2 + 2 + 1
    drawn = screen.getvalue()
    assert "\x1b[" in drawn and "train" in drawn and "3/3" in drawn and "eta" in drawn and "tok/s" in drawn
    # answered a round at a time, the grades are answer_items' own
    items = trainer.task.load("test")[:5]
    assert trainer._answer_counting(items) == answer_items(trainer.method, trainer.task, items, 2)


def test_captured_output_has_no_control_codes_and_still_counts(tmp_path):
    screen = io.StringIO()
    trainer = _run(tmp_path / "run", Console(file=screen, width=120))
    p = trainer.progress
    assert not p.enabled
    assert (p.done, p.eval_total, p.eval_done) == (3, 5, 5)
    text = screen.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("step=")] == [
        "step=1/3",
        "step=2/3",
        "step=3/3",
        "step=3/3",
    ]  # three steps, then the held-out evaluation's row


def test_a_resumed_run_counts_from_its_checkpoint():
    p = RunProgress(Console(file=io.StringIO(), force_terminal=True), steps=6, done=4).start()
    try:
        p.step(5, 1.0, 100.0)
        assert p.done == 5
        assert p._bar is not None and p._train is not None
        task = p._bar.tasks[0]
        assert (task.total, task.completed) == (6, 5)
    finally:
        p.close()


def test_progress_is_off_off_a_terminal_or_when_quiet():
    assert progress_enabled(Console(file=io.StringIO(), force_terminal=True))
    assert not progress_enabled(Console(file=io.StringIO()))
    assert not progress_enabled(Console(file=io.StringIO(), force_terminal=True, quiet=True))
