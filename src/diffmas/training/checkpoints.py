"""The checkpoint store of a training run: `checkpoints/step-N` directories written atomically, listed oldest
first, read back whole, finite and well-formed (or refused naming the file at fault), moved aside when they must
not be resumed from, and the RNG states they carry.

Nothing in a checkpoint can run code when it is read: tensors are safetensors, everything else JSON or YAML read
with `yaml.safe_load` (a pickle such as the old `rng.pt` runs whatever it names on load, so `--resume` on a crafted
run directory would have run it). Checkpoints written before this format (`*.pt` files) are read with
`torch.load(weights_only=True)`, PyTorch's restricted unpickler, which builds tensors and plain containers only;
the RNG file also needs numpy's array constructor (and nothing else) allowed.

A checkpoint is checked twice: on its own when read (`read_checkpoint`: every file readable, `state.json` an object
with integer `step` and `position`, every tensor finite, the RNG states accepted by throwaway generators), and
against the live run before anything is loaded into it (`check_fits`, called by `restore`: parameter names and
shapes, optimizer groups and slot shapes, scheduler keys). Both raise `CheckpointError`, which the trainer answers by moving
the checkpoint aside and falling back to the previous one. The trainer decides when to write and which to trust;
this module knows the files."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError

from diffmas.records import repair_jsonl
from diffmas.training.config import ConfigDeprecationWarning, TrainConfig


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from: a file is missing, truncated, unreadable or malformed, a tensor is not
    finite, or its tensors do not fit the run being resumed."""


CHECKPOINT_FILES = (
    "state.json",
    "config.yaml",
    "trainable.safetensors",
    "optimizer.safetensors",
    "scheduler.json",
    "rng.json",
)
# The files of checkpoints written before the format above (torch pickles); read with the restricted unpickler only.
LEGACY_FILES = ("state.json", "config.yaml", "trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt")
_OPTIMIZER_META = "diffmas"  # the safetensors metadata key holding the optimizer's non-tensor part (JSON)
_UNREADABLE = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    pickle.UnpicklingError,
    SafetensorError,
    yaml.YAMLError,
)


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


# ---------------------------------------------------------------------------------------------------- reading
def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Everything a resume needs from `ckpt`, checked on its own: each file present and readable, `state.json` an
    object with non-negative integer `step` (the directory's) and `position`, every trainable and optimizer
    tensor finite, the RNG states valid. Keys: state, config, trainable, optimizer, scheduler, rng.
    Raises `CheckpointError` naming the file (or tensor) at fault."""
    legacy = not (ckpt / "trainable.safetensors").exists() and (ckpt / "trainable.pt").exists()
    names = LEGACY_FILES if legacy else CHECKPOINT_FILES
    loaded: dict[str, Any] = {}
    for name in names:
        path = ckpt / name
        key = name.split(".")[0]
        try:
            loaded[key] = _read_part(path, name)
        except _UNREADABLE as e:
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {reason})") from e
    _check_state(ckpt, loaded["state"])
    if not isinstance(loaded["trainable"], dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in loaded["trainable"].items()
    ):
        raise CheckpointError(f"{ckpt / names[2]} is not a mapping of names to tensors")
    if legacy:
        loaded["optimizer"] = _check_optimizer(ckpt / "optimizer.pt", loaded["optimizer"])
        loaded["rng"] = _legacy_rng(ckpt / "rng.pt", loaded["rng"])
    if not isinstance(loaded["scheduler"], dict):
        raise CheckpointError(f"{ckpt / 'scheduler.json'} is not a JSON object")
    try:
        decode_rng(loaded["rng"])
    except CheckpointError as e:
        raise CheckpointError(f"{ckpt / names[5]}: {e}") from None
    bad = first_non_finite(loaded["trainable"].items()) or first_non_finite(
        optimizer_tensors(loaded["optimizer"])
    )
    if bad:
        raise CheckpointError(f"{ckpt} holds non-finite values ({bad})")
    return loaded


def _read_part(path: Path, name: str) -> Any:
    """One file of a checkpoint, by a reader that cannot run code."""
    if name == "config.yaml":
        # a run saved before a field was replaced is data, not a config for its reader to fix
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigDeprecationWarning)
            return TrainConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    if name.endswith(".json"):
        return json.loads(path.read_text(encoding="utf-8"))
    if name == "optimizer.safetensors":
        return _read_optimizer(path)
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if name == "rng.pt":  # numpy's RandomState pickles an array: allow its constructor, nothing else
        import numpy as np

        core = getattr(np, "_core", None) or np.core  # numpy 2 moved it; numpy 1 pickled numpy.core...
        reconstruct = core.multiarray._reconstruct
        allowed: list[Any] = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), reconstruct]
        allowed += [(reconstruct, "numpy.core.multiarray._reconstruct")]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_state(ckpt: Path, state: Any) -> None:
    """`state.json` must say which step it is (the directory's) and how much data was consumed."""
    where = ckpt / "state.json"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(state).__name__}")
    for key in ("step", "position"):
        value = state.get(key)
        if value is None:
            raise CheckpointError(f"{where}: no {key!r}")
        if type(value) is not int or value < 0:
            raise CheckpointError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    if state["step"] != checkpoint_step(ckpt):
        raise CheckpointError(
            f"{where}: step {state['step']} in the directory of step {checkpoint_step(ckpt)}"
        )


def _read_optimizer(path: Path) -> dict[str, Any]:
    """An optimizer state dict from `optimizer.safetensors`: the slot tensors, and the rest from its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = json.loads((f.metadata() or {}).get(_OPTIMIZER_META, "null"))
        if not isinstance(meta, dict):
            raise ValueError("no optimizer metadata")
        state: dict[int, dict[str, Any]] = {}
        for key in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
            _, pid, slot = key.split(".", 2)
            state.setdefault(int(pid), {})[slot] = f.get_tensor(key)
    for pid, slots in (meta.get("scalars") or {}).items():
        state.setdefault(int(pid), {}).update(slots)
    return _check_optimizer(path, {"state": state, "param_groups": meta.get("param_groups")})


def _check_optimizer(path: Path, sd: Any) -> dict[str, Any]:
    """An optimizer state dict's shape on its own: groups of integer parameter ids, state only for those ids."""
    groups = sd.get("param_groups") if isinstance(sd, dict) else None
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise CheckpointError(f"{path}: not an optimizer state (param_groups is not a list of groups)")
    ids = [p for g in groups for p in g["params"]]
    if not all(type(p) is int for p in ids) or len(set(ids)) != len(ids):
        raise CheckpointError(f"{path}: parameter ids are not distinct integers")
    state = sd.get("state")
    if (
        not isinstance(state, dict)
        or not set(state) <= set(ids)
        or not all(isinstance(s, dict) for s in state.values())
    ):
        raise CheckpointError(f"{path}: the optimizer state names parameters that no group holds")
    return sd


# ---------------------------------------------------------------------------------------------------- restoring
def restore(
    ckpt: Path, loaded: dict[str, Any], named: Iterable[tuple[str, Any]], optimizer, scheduler
) -> None:
    """Load a `read_checkpoint` result into the live run: trainable tensors, optimizer, scheduler, RNG states.
    Everything is checked against the run first (`check_fits`), so a checkpoint that does not fit changes nothing
    and raises `CheckpointError`."""
    params = dict(named)
    optimizer_state = check_fits(ckpt, loaded, params, optimizer, scheduler)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(loaded["trainable"][name])
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(loaded["scheduler"])
    set_rng_state(loaded["rng"])


def check_fits(
    ckpt: Path, loaded: dict[str, Any], params: Mapping[str, Any], optimizer, scheduler
) -> dict[str, Any]:
    """Check a checkpoint against the live run; return the optimizer state dict to load.

    Torch checks little of this itself: `copy_` broadcasts a tensor of shape (1,) into any parameter,
    `Optimizer.load_state_dict` checks only the group sizes (a slot of the wrong shape fails later, inside a step),
    and a scheduler's `load_state_dict` copies whatever keys it is given onto the object."""
    _check_trainable(ckpt, loaded["trainable"], params)
    optimizer_state = _check_optimizer_fits(ckpt, loaded["optimizer"], optimizer)
    _check_scheduler_fits(ckpt, loaded["scheduler"], scheduler)
    return optimizer_state


def _check_trainable(ckpt: Path, saved: Mapping[str, torch.Tensor], params: Mapping[str, Any]) -> None:
    """Every trained parameter is in the checkpoint with its shape, and the checkpoint holds nothing else."""
    where = ckpt / "trainable.safetensors"
    missing = sorted(set(params) - set(saved))
    if missing:
        raise CheckpointError(f"{where} lacks parameter {missing[0]}")
    extra = sorted(set(saved) - set(params))
    if extra:
        raise CheckpointError(f"{where} holds {extra[0]}, which this run does not train")
    for name, p in params.items():
        if tuple(saved[name].shape) != tuple(p.shape):
            raise CheckpointError(
                f"{where}: {name} has shape {tuple(saved[name].shape)}, the run's parameter {tuple(p.shape)}"
            )


def _check_optimizer_fits(ckpt: Path, saved: dict[str, Any], optimizer) -> dict[str, Any]:
    """The same groups with the same options and sizes, every slot tensor a scalar or of its parameter's shape."""
    where = ckpt / "optimizer.safetensors"
    live = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(live):
        raise CheckpointError(f"{where}: {len(groups)} parameter groups, the run has {len(live)}")
    fixed = []
    for i, (g, lg) in enumerate(zip(groups, live, strict=True)):
        if set(g) != set(lg):
            raise CheckpointError(f"{where}: group {i} has options {sorted(g)}, the run's {sorted(lg)}")
        if len(g["params"]) != len(lg["params"]):
            raise CheckpointError(
                f"{where}: group {i} holds {len(g['params'])} parameters, the run's {len(lg['params'])}"
            )
        # JSON has no tuples: give back the live group's container types (AdamW's betas)
        fixed.append(
            {k: tuple(v) if isinstance(lg[k], tuple) and isinstance(v, list) else v for k, v in g.items()}
        )
    live_params = [p for group in optimizer.param_groups for p in group["params"]]
    param_of = dict(zip((pid for g in groups for pid in g["params"]), live_params, strict=True))
    for pid, slots in saved["state"].items():
        shape = tuple(param_of[pid].shape)
        for slot, value in slots.items():
            if torch.is_tensor(value) and value.dim() > 0 and tuple(value.shape) != shape:
                raise CheckpointError(
                    f"{where}: state[{pid}].{slot} has shape {tuple(value.shape)}, its parameter {shape}"
                )
    return {"state": saved["state"], "param_groups": fixed}


def _check_scheduler_fits(ckpt: Path, saved: dict[str, Any], scheduler) -> None:
    """Exactly the live scheduler's keys, with values of the same kinds."""
    where = ckpt / "scheduler.json"
    live = scheduler.state_dict()
    if set(saved) != set(live):
        diff = sorted(set(saved) ^ set(live))
        raise CheckpointError(f"{where}: keys differ from the run's scheduler ({', '.join(diff)})")
    for key, value in saved.items():
        if _kind(value) != _kind(live[key]) or (isinstance(value, list) and len(value) != len(live[key])):
            raise CheckpointError(f"{where}: {key!r} is {value!r}, not like the run's {live[key]!r}")


def _kind(value: Any) -> str:
    """A JSON kind, with int and float one kind (a learning rate of 1 is written `1.0` or `1`)."""
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------- writing
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
    from safetensors.torch import save_file

    tmp = atomic_dir(final)
    save_adapter(tmp / "adapter")
    save_file({k: v.contiguous() for k, v in trainable.items()}, tmp / "trainable.safetensors")
    _write_optimizer(optimizer.state_dict(), tmp / "optimizer.safetensors")
    _write_json(tmp / "scheduler.json", scheduler.state_dict())
    _write_json(tmp / "rng.json", rng_state())
    _write_json(tmp / "state.json", state)
    (tmp / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    commit_dir(tmp, final)


def _write_json(path: Path, data: Any) -> None:
    """Strict JSON: a value JSON cannot hold (a tensor, a function) is an error here, not a pickle."""
    path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")


def _write_optimizer(sd: dict[str, Any], path: Path) -> None:
    """The slot tensors as safetensors (`state.<id>.<slot>`), the groups and any scalar slots as JSON metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in sd["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[slot] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    save_file(tensors, path, metadata={_OPTIMIZER_META: json.dumps(meta)})


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


# ---------------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as JSON: torch's CPU generator, each CUDA device's (when CUDA is in
    use: dropout on a GPU draws there), Python's `random` and numpy's global state."""
    import numpy as np

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return _rng_json(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state())


def _rng_json(cpu: Any, cuda: list[Any], python: Any, numpy: Any) -> dict[str, Any]:
    """The JSON form of the four states: torch's generator states as byte lists, Python's and numpy's tuples."""
    alg, key, pos, has_gauss, cached = numpy
    version, internal, gauss = python
    return {
        "torch": cpu.tolist(),
        "cuda": [s.tolist() for s in cuda],
        "python": [version, list(internal), gauss],
        "numpy": {
            "algorithm": alg,
            "key": [int(k) for k in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def decode_rng(state: Any) -> dict[str, Any]:
    """The generator states of a `rng_state()` dict, each checked by loading it into a throwaway generator, so a
    malformed state is refused before a resume touches the global ones. Raises `CheckpointError`."""
    import numpy as np

    try:
        torch_state = _byte_tensor(state["torch"])
        torch.Generator().set_state(torch_state)
        if not isinstance(state["cuda"], list):
            raise TypeError("the CUDA states must be a list")
        cuda = [_byte_tensor(s) for s in state["cuda"]]
        if cuda and torch.cuda.is_available():
            size = torch.cuda.get_rng_state().numel()
            if any(c.numel() != size for c in cuda):
                raise ValueError(f"a CUDA state is not {size} bytes")
        version, internal, gauss = state["python"]
        py = (version, tuple(internal), gauss)
        random.Random().setstate(py)
        n = state["numpy"]
        np_state = (
            n["algorithm"],
            np.asarray(n["key"], dtype=np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
        if not all(type(v) is int for v in n["key"]) or type(n["pos"]) is not int:
            raise TypeError("numpy key and pos must be integers")
        np.random.RandomState().set_state(np_state)
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"not a valid RNG state ({type(e).__name__}: {e})") from None
    return {"torch": torch_state, "cuda": cuda, "python": py, "numpy": np_state}


def _byte_tensor(values: Any) -> torch.Tensor:
    if not isinstance(values, list) or not all(type(v) is int and 0 <= v < 256 for v in values):
        raise TypeError("a torch generator state must be a list of bytes")
    return torch.tensor(values, dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back a `rng_state()` dict (checked first). CUDA states are restored on as many devices as both runs
    have; a run resumed without CUDA has none to restore."""
    import numpy as np

    decoded = decode_rng(state)
    torch.set_rng_state(decoded["torch"])
    if decoded["cuda"] and torch.cuda.is_available():
        for device, s in enumerate(decoded["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, device)
    random.setstate(decoded["python"])
    np.random.set_state(decoded["numpy"])


def _legacy_rng(path: Path, old: Any) -> dict[str, Any]:
    """The `rng_state()` form of an old `rng.pt` (read by the restricted unpickler), checked like a new one."""
    try:
        return _rng_json(old["torch"], [], old["python"], old["numpy"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a valid RNG state ({type(e).__name__}: {e})") from None
