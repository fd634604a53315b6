"""The checkpoint store on its own: atomic directories, listing, verified reads, moving aside, metrics, RNG."""

from __future__ import annotations

import json
import random

import pytest
import torch

from diffmas.training.checkpoints import (
    CHECKPOINT_FILES,
    CheckpointError,
    atomic_dir,
    checkpoint_step,
    commit_dir,
    list_checkpoints,
    move_aside,
    prune,
    read_checkpoint,
    rng_state,
    set_rng_state,
    truncate_metrics,
    write_checkpoint,
)
from diffmas.training.config import TrainConfig


def _write(root, step: int, weight: float = 1.0):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    cfg = TrainConfig.model_validate({"data": {"task": "x"}})
    final = root / f"step-{step:06d}"
    write_checkpoint(
        final,
        lambda where: where.mkdir(),
        {"model.w": torch.full((3,), weight)},
        optimizer,
        scheduler,
        {"step": step, "position": 2 * step},
        cfg,
    )
    return final


def test_a_written_checkpoint_reads_back_whole(tmp_path):
    ckpt = _write(tmp_path, 3)
    assert {p.name for p in ckpt.iterdir()} == {*CHECKPOINT_FILES, "adapter"}
    loaded = read_checkpoint(ckpt)
    assert loaded["state.json"] == {"step": 3, "position": 6}
    assert torch.equal(loaded["trainable.pt"]["model.w"], torch.ones(3))
    assert loaded["config.yaml"].data.task == "x"
    assert checkpoint_step(ckpt) == 3
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("fault", ["missing", "truncated", "non-finite"])
def test_a_bad_checkpoint_is_refused_naming_what_is_wrong(tmp_path, fault):
    ckpt = _write(tmp_path, 1, weight=float("nan") if fault == "non-finite" else 1.0)
    if fault == "missing":
        (ckpt / "optimizer.pt").unlink()
    elif fault == "truncated":
        data = (ckpt / "trainable.pt").read_bytes()
        (ckpt / "trainable.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.w" if fault == "non-finite" else r"\.pt is unreadable"):
        read_checkpoint(ckpt)


def test_listing_skips_moved_aside_and_temp_dirs_and_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _write(tmp_path, step)
    move_aside(tmp_path / "step-000002", "broken")
    atomic_dir(tmp_path / "step-000009")  # a write that never committed
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [1, 3, 4]
    assert (tmp_path / "broken-step-000002").is_dir()
    move_aside(tmp_path / "step-000002", "broken")  # already gone: another process moved it
    prune(tmp_path, 2)
    assert [checkpoint_step(p) for p in list_checkpoints(tmp_path)] == [3, 4]


def test_commit_replaces_a_directory_whole(tmp_path):
    final = tmp_path / "adapter"
    for text in ("old", "new"):
        tmp = atomic_dir(final)
        (tmp / "f").write_text(text)
        commit_dir(tmp, final)
    assert (final / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_truncate_metrics_drops_later_rows_and_a_torn_tail(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')
    with pytest.warns(Warning, match="torn last line"):
        truncate_metrics(path, 2)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]


def test_rng_state_round_trips():
    import numpy as np

    saved = rng_state()
    first = (torch.rand(2), random.random(), np.random.rand())
    set_rng_state(saved)
    again = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
