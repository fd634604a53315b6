"""Experiment trackers of a training run (`run.report_to`), through accelerate's tracker classes: TensorBoard by
default, Weights & Biases, MLflow, Comet, Aim, ClearML, DVCLive, SwanLab or Trackio when installed. Each tracker
gets every row the trainer writes to `metrics.jsonl`, under the same keys and at the same step.

The names are accelerate's (`accelerate.utils.LoggerType`), checked when the config is read; whether each is
installed is checked when the trainer starts, before any data or model loads, so a missing package is one line
naming it and its pip package, not a tracker silently left out (accelerate drops an unavailable one with a debug
log)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# pip package of each tracker whose package name is not the tracker's
PIP_PACKAGES = {"comet_ml": "comet-ml"}
TENSORBOARD_DIR = "tensorboard"  # TensorBoard's event files: <run.out>/tensorboard, as before trackers
PROJECT = "diffmas"  # the project (W&B, Comet, ...) or experiment (MLflow) a run is logged under


def known_trackers() -> list[str]:
    """The tracker names accelerate knows (without "all")."""
    from accelerate.utils import LoggerType

    return [str(t) for t in LoggerType if str(t) != "all"]


def parse_report_to(value: Any) -> list[str]:
    """`run.report_to` as a list of tracker names: a name, a list of names, "all" (every installed tracker) or
    "none" / null / [] (no tracker). Raises ValueError naming an unknown tracker and the known ones."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a tracker name, 'all', 'none' or a list of names, got {value!r}")
    names = [n.strip().lower() for n in names]
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"'none' cannot be combined with other trackers: {names}")
        return []
    known = known_trackers()
    for name in names:
        if name != "all" and name not in known:
            raise ValueError(f"unknown tracker {name!r}: report_to takes {', '.join(known)}, 'all' or 'none'")
    return list(dict.fromkeys(names))  # in order, once each


def available_trackers() -> list[str]:
    """The trackers whose packages are importable here (accelerate's check)."""
    from accelerate.tracking import get_available_trackers

    return [str(t) for t in get_available_trackers()]


def require_trackers(names: list[str]) -> list[str]:
    """The trackers to start: "all" stands for every installed one; a named tracker that is not installed is a
    ValueError naming it and the package to install."""
    available = available_trackers()
    if "all" in names:
        return available
    for name in names:
        if name not in available:
            package = PIP_PACKAGES.get(name, name)
            raise ValueError(f"run.report_to: {name} is not installed (pip install {package})")
    return list(names)


def log_with(names: list[str], out: Path) -> list[Any]:
    """`Accelerator(log_with=...)` for these trackers: TensorBoard as a tracker object that writes into
    `<out>/tensorboard` (accelerate would name the folder after the project), the others by name."""
    from accelerate.tracking import TensorBoardTracker

    return [TensorBoardTracker(TENSORBOARD_DIR, out) if n == "tensorboard" else n for n in names]


def init_kwargs(names: list[str], run_name: str) -> dict[str, dict[str, Any]]:
    """Each tracker's start arguments: the run's name where the tracker takes one (the run.out folder's name)."""
    by_tracker = {"wandb": {"name": run_name}, "mlflow": {"run_name": run_name}}
    return {n: by_tracker[n] for n in names if n in by_tracker}


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as `section.field` keys with scalar values (trackers such as TensorBoard's hparams take
    scalars only): a list or mapping left inside is written as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, list | tuple | Mapping):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def scalars(row: Mapping[str, Any]) -> dict[str, int | float]:
    """The values of a metrics.jsonl row that trackers plot: every number but the step (a bool is no number)."""
    return {
        k: v for k, v in row.items() if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }
