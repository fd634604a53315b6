"""Resuming a finished run with a larger `optim.steps` (as transformers' Trainer resumes with a larger `max_steps`),
and the refusals around it: a budget below the checkpoint's step, a fresh run into a used folder, nothing left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _cfg(out: Path, steps: int, schedule: str = "cosine", **run) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 2, "eval_max_new_tokens": 6},
            "optim": {"steps": steps, "batch_size": 2, "lr": 5e-3, "warmup_steps": 1, "schedule": schedule},
            "run": {"out": str(out), "report_to": [], "save_every": 100, **run},
        }
    )


def _train(cfg: TrainConfig, resume: bool = False, record_lr: list[float] | None = None) -> dict:
    """Train on a fresh tiny llama; with `record_lr`, the learning rate each optimizer step applies."""
    trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
    trainer.setup(resume=resume)
    if record_lr is not None:
        step = trainer.optimizer.step

        def recording(*args, **kwargs):
            record_lr.append(trainer.optimizer.param_groups[0]["lr"])
            return step(*args, **kwargs)

        trainer.optimizer.step = recording  # type: ignore[method-assign]
    return trainer.train(resume=resume)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _untimed(rows: list[dict]) -> list[dict]:
    """Rows without the wall-clock fields, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "target_tokens_per_s")} for r in rows]


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_a_finished_run_resumed_with_more_steps_equals_the_longer_run_under_a_constant_schedule(tmp_path):
    """Under a schedule that does not depend on the total (constant after warmup), 4 steps then 2 more are the
    6-step run: the same losses at every step and the same final adapter."""
    _train(_cfg(tmp_path / "long", 6, "constant"))
    _train(_cfg(tmp_path / "run", 4, "constant"))
    result = _train(_cfg(tmp_path / "run", 6, "constant"), resume=True)
    assert [r["step"] for r in result["history"]] == [5, 6]
    assert _untimed(_rows(tmp_path / "run")) == _untimed(_rows(tmp_path / "long"))
    long, resumed = _adapter(tmp_path / "long"), _adapter(tmp_path / "run")
    assert long.keys() == resumed.keys()
    assert all(torch.equal(long[k], resumed[k]) for k in long)


def test_a_cosine_run_resumed_with_more_steps_continues_on_the_schedule_of_the_new_total(tmp_path, capsys):
    """Cosine depends on the total, so 4 + 2 steps are not the 6-step run: the run continues from step 4, logs steps
    5-6 once after 1-4, its updates at steps 5-6 apply the 6-step schedule's learning rates, says so in a line, and
    its adapter moves on from the 4-step one."""
    six: list[float] = []
    _train(_cfg(tmp_path / "long", 6), record_lr=six)
    _train(_cfg(tmp_path / "run", 4))
    four = _adapter(tmp_path / "run")
    before = _rows(tmp_path / "run")
    resumed: list[float] = []
    result = _train(_cfg(tmp_path / "run", 6), resume=True, record_lr=resumed)
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[:4] == before
    assert [r["step"] for r in result["history"]] == [5, 6]
    assert resumed == pytest.approx(six[4:], rel=1e-12)
    assert [r["lr"] for r in rows[4:]] == pytest.approx([r["lr"] for r in _rows(tmp_path / "long")[4:]])
    said = capsys.readouterr().out
    assert "optim.steps 4 -> 6: the cosine learning-rate schedule now spans 6 steps" in said
    after = _adapter(tmp_path / "run")
    assert any(not torch.equal(four[k], after[k]) for k in four)
    assert json.loads((tmp_path / "run" / "adapter" / "diffmas_adapter.json").read_text())["step"] == 6


def test_a_budget_below_the_checkpoint_is_refused_in_one_line(tmp_path):
    _train(_cfg(tmp_path / "run", 4))
    with pytest.raises(ValueError) as e:
        DiffMASTrainer(_cfg(tmp_path / "run", 3), backbone=tiny_backbone("llama")).setup(resume=True)
    message = str(e.value)
    assert "\n" not in message
    assert "optim.steps=3" in message and "at step 4" in message and "optim.steps=4 or more" in message
    assert [r["step"] for r in _rows(tmp_path / "run")] == [1, 2, 3, 4]


def test_other_changes_still_refuse_to_resume(tmp_path):
    _train(_cfg(tmp_path / "run", 2))
    with pytest.raises(ValueError, match=r"differs in optim\.schedule$"):
        DiffMASTrainer(_cfg(tmp_path / "run", 4, "constant"), backbone=tiny_backbone("llama")).setup(
            resume=True
        )


def test_a_fresh_run_into_a_finished_run_says_how_to_continue_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    _train(_cfg(out, 2))
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError) as e:
        DiffMASTrainer(_cfg(out, 4), backbone=tiny_backbone("llama")).setup()
    assert str(e.value) == (
        f"{out} already holds a training run, finished at step 2: to train it further, pass --resume with a "
        "larger optim.steps (e.g. optim.steps=4), or choose another run.out"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_fresh_run_into_a_stopped_run_names_its_step(tmp_path):
    out = tmp_path / "run"
    _train(_cfg(out, 6, stop_after=3))
    with pytest.raises(ValueError, match=r"training run, stopped at step 3: pass --resume to continue it"):
        DiffMASTrainer(_cfg(out, 6), backbone=tiny_backbone("llama")).setup()


def test_resuming_a_finished_run_with_its_own_budget_trains_nothing_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    _train(_cfg(out, 2))
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.yaml"}
    result = _train(_cfg(out, 2), resume=True)
    assert result["history"] == []
    assert "nothing to train" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.yaml"} == files


def test_a_finished_run_leaves_a_checkpoint_at_its_last_step(tmp_path):
    """What a larger budget resumes from (save_every 100 never falls on step 3)."""
    _train(_cfg(tmp_path / "run", 3))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000003"]
