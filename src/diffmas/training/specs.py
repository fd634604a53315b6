"""The training methods' specs, defined with the inference methods in `diffmas.methods.specs` (re-exported here,
where the training config, objective and trainer read them)."""

from __future__ import annotations

from diffmas.methods.specs import TRAIN_METHOD_NAMES, TRAIN_METHODS, TrainSpec, train_spec

__all__ = ["TRAIN_METHODS", "TRAIN_METHOD_NAMES", "TrainSpec", "train_spec"]
