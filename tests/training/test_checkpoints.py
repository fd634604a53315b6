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
    restore,
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
    assert loaded["state"] == {"step": 3, "position": 6}
    assert torch.equal(loaded["trainable"]["model.w"], torch.ones(3))
    assert loaded["config"].data.task == "x"
    assert checkpoint_step(ckpt) == 3
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("fault", ["missing", "truncated", "non-finite"])
def test_a_bad_checkpoint_is_refused_naming_what_is_wrong(tmp_path, fault):
    ckpt = _write(tmp_path, 1, weight=float("nan") if fault == "non-finite" else 1.0)
    if fault == "missing":
        (ckpt / "optimizer.safetensors").unlink()
    elif fault == "truncated":
        data = (ckpt / "trainable.safetensors").read_bytes()
        (ckpt / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match="model.w" if fault == "non-finite" else r"\.safetensors is unreadable"
    ):
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


def _write_legacy(root, step: int, rng: object = None):
    """A checkpoint as diffmas wrote them before safetensors: every part a torch pickle, the RNG states too."""
    import numpy as np

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    ckpt = root / f"step-{step:06d}"
    ckpt.mkdir(parents=True)
    torch.save({"model.w": torch.ones(3)}, ckpt / "trainable.pt")
    torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
    torch.save(scheduler.state_dict(), ckpt / "scheduler.pt")
    if rng is None:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    torch.save(rng, ckpt / "rng.pt")
    (ckpt / "state.json").write_text(json.dumps({"step": step, "position": 2 * step}))
    (ckpt / "config.yaml").write_text(TrainConfig.model_validate({"data": {"task": "x"}}).to_yaml())
    return ckpt


def test_a_legacy_checkpoint_is_read_without_running_pickled_code(tmp_path):
    """An old `rng.pt` crafted to open a file when unpickled: refused as unreadable, and the file never made
    (the old reader unpickled it with `weights_only=False`)."""
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = _write_legacy(tmp_path / "ckpts", 2, rng={"torch": torch.get_rng_state(), "x": Payload()})
    with pytest.raises(CheckpointError, match=r"rng\.pt is unreadable \(UnpicklingError"):
        read_checkpoint(ckpt)
    assert not marker.exists()


def test_an_honest_legacy_checkpoint_still_resumes_with_its_rng_states(tmp_path):
    import numpy as np

    saved = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    first = (torch.rand(2), random.random(), np.random.rand())
    loaded = read_checkpoint(_write_legacy(tmp_path, 2, rng=saved))
    assert loaded["state"] == {"step": 2, "position": 4}
    assert torch.equal(loaded["trainable"]["model.w"], torch.ones(3))
    set_rng_state(loaded["rng"])
    again = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{}", "no 'step'"),
        ("[]", "expected a JSON object, got list"),
        ('{"step": "3", "position": 6}', "'step' must be a non-negative integer, got '3'"),
        ('{"step": 3, "position": true}', "'position' must be a non-negative integer, got True"),
        ('{"step": 3, "position": -1}', "'position' must be a non-negative integer, got -1"),
        ('{"step": 3, "position": NaN}', "'position' must be a non-negative integer, got nan"),
        ('{"step": 5, "position": 6}', "step 5 in the directory of step 3"),
    ],
)
def test_a_malformed_state_json_is_refused(tmp_path, text, message):
    ckpt = _write(tmp_path, 3)
    (ckpt / "state.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"state.json: {message}".replace("(", r"\(")):
        read_checkpoint(ckpt)


def test_nothing_in_a_checkpoint_is_a_pickle(tmp_path):
    """Every file is JSON, YAML or safetensors; the RNG states include a CUDA entry (empty without CUDA)."""
    ckpt = _write(tmp_path, 1)
    for path in ckpt.iterdir():
        if path.is_file():
            assert path.suffix in {".json", ".yaml", ".safetensors"}, path.name
    rng = json.loads((ckpt / "rng.json").read_text())
    assert set(rng) == {"torch", "cuda", "python", "numpy"}


@pytest.mark.parametrize(
    ("part", "broken", "message"),
    [
        ("torch", lambda v: v[:-1], "RuntimeError"),
        ("torch", lambda v: [*v[:-1], 256], "TypeError: a torch generator state must be a list of bytes"),
        ("cuda", lambda v: ["abc"], "TypeError: a torch generator state must be a list of bytes"),
        ("python", lambda v: [v[0], v[1][:5], v[2]], "ValueError"),
        ("numpy", lambda v: {**v, "key": v["key"][:10]}, "IndexError"),
        ("numpy", lambda v: {**v, "key": [*v["key"][:-1], 2**40]}, "OverflowError"),
        ("numpy", lambda v: {k: x for k, x in v.items() if k != "pos"}, "KeyError"),
    ],
)
def test_a_malformed_rng_state_is_refused_before_touching_the_generators(tmp_path, part, broken, message):
    ckpt = _write(tmp_path, 1)
    rng = json.loads((ckpt / "rng.json").read_text())
    rng[part] = broken(rng[part])
    (ckpt / "rng.json").write_text(json.dumps(rng))
    before = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=rf"rng\.json: not a valid RNG state \({message}"):
        read_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="not a valid RNG state"):
        set_rng_state(rng)
    assert torch.equal(torch.get_rng_state(), before)


def _live(shape=(3,)):
    param = torch.nn.Parameter(torch.zeros(shape))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    return param, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def test_restore_loads_a_fitting_checkpoint_into_the_live_run(tmp_path):
    loaded = read_checkpoint(_write(tmp_path, 1))
    param, optimizer, scheduler = _live()
    restore(tmp_path, loaded, [("model.w", param)], optimizer, scheduler)
    assert torch.equal(param.detach(), torch.ones(3))
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # a tuple again, as AdamW made it
    assert torch.equal(optimizer.state[param]["exp_avg"], loaded["optimizer"]["state"][0]["exp_avg"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("param_shape", r"model.w has shape \(3,\), the run's parameter \(4,\)"),
        ("param_name", "lacks parameter model.v"),
        ("slot_shape", r"state\[0\].exp_avg has shape \(2,\), its parameter \(3,\)"),
        ("scheduler_key", "keys differ from the run's scheduler"),
        ("scheduler_kind", "'last_epoch' is 'soon'"),
    ],
)
def test_a_checkpoint_that_does_not_fit_the_run_changes_nothing(tmp_path, edit, message):
    loaded = read_checkpoint(_write(tmp_path, 1))
    param, optimizer, scheduler = _live((4,) if edit == "param_shape" else (3,))
    name = "model.v" if edit == "param_name" else "model.w"
    if edit == "slot_shape":
        loaded["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2)
    elif edit == "scheduler_key":
        loaded["scheduler"]["__class__"] = "x"
    elif edit == "scheduler_kind":
        loaded["scheduler"]["last_epoch"] = "soon"
    before = param.detach().clone()
    with pytest.raises(CheckpointError, match=message):
        restore(tmp_path, loaded, [(name, param)], optimizer, scheduler)
    assert torch.equal(param.detach(), before) and not optimizer.state
