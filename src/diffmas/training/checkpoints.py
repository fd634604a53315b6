"""The checkpoint store of a training run: `checkpoints/step-N` directories written atomically, listed oldest
first, read back whole and finite (or refused naming the file at fault), moved aside when they must not be resumed
from, and the RNG states they carry. The trainer decides when to write and which to trust; this module knows the
files."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from diffmas.records import repair_jsonl
from diffmas.training.config import TrainConfig


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: a file is missing, truncated or unreadable, or a tensor is not finite."""


CHECKPOINT_FILES = ("state.json", "config.yaml", "trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt")
_UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, yaml.YAMLError)


def first_non_finite(named: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or inf (None when all are finite)."""
    for name, t in named:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def optimizer_tensors(state: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, value) of every per-parameter slot of an optimizer state dict (AdamW: step, exp_avg, exp_avg_sq)."""
    for pid, slots in state.get("state", {}).items():
        for key, value in slots.items():
            yield f"optimizer state[{pid}].{key}", value


def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Everything a resume needs from `ckpt`, checked: each file present and readable, every trainable and
    optimizer tensor finite. Raises `CheckpointError` naming the file (or tensor) at fault."""
    loaded: dict[str, Any] = {}
    for name in CHECKPOINT_FILES:
        path = ckpt / name
        try:
            if name == "state.json":
                loaded[name] = json.loads(path.read_text(encoding="utf-8"))
            elif name == "config.yaml":
                loaded[name] = TrainConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
            else:  # the RNG states hold numpy and Python objects; the rest is plain tensors
                loaded[name] = torch.load(path, map_location="cpu", weights_only=name != "rng.pt")
        except _UNREADABLE as e:
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {reason})") from e
    bad = first_non_finite(loaded["trainable.pt"].items()) or first_non_finite(
        optimizer_tensors(loaded["optimizer.pt"])
    )
    if bad:
        raise CheckpointError(f"{ckpt} holds non-finite values ({bad})")
    return loaded


def atomic_dir(final: Path) -> Path:
    """A fresh temp directory beside `final` to write into; `commit_dir` then puts it in place."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` with renames, so a reader sees the old directory or the new one, never a mix."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


def write_checkpoint(
    final: Path, save_adapter, trainable: dict[str, Any], optimizer, scheduler, state: dict[str, Any], cfg
) -> None:
    """Write every file of a checkpoint into `final` atomically; `save_adapter(dir)` writes the PEFT adapter."""
    tmp = atomic_dir(final)
    save_adapter(tmp / "adapter")
    torch.save(trainable, tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    (tmp / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    commit_dir(tmp, final)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under `root`, oldest first (`broken-*`, `poisoned-*` and temp dirs are not)."""
    return sorted(p for p in root.glob("step-*") if p.name[5:].isdigit())


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix("step-"))


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old)


def move_aside(ckpt: Path, why: str) -> None:
    """Keep a checkpoint that must not be resumed from (for a look), under a name `resume` never picks."""
    target = ckpt.with_name(f"{why}-{ckpt.name}")
    if target.exists():
        shutil.rmtree(target)
    with contextlib.suppress(FileNotFoundError):  # another process moved it first
        ckpt.rename(target)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of `path` logged after `step`. A torn last row (a kill mid-write) is moved aside first; a bad
    row elsewhere is an error naming the file and line."""
    rows = repair_jsonl(path)
    kept = [r for r in rows if r.get("step", 0) <= step]
    if path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
