"""The paper-scale path on tiny in-process models: what a GPU user's config reaches, checked on CPU."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from diffmas.decoding import generator_on
from diffmas.testing import tiny_backbone
from diffmas.training import DiffMASTrainer, TrainConfig

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def _cfg(tmp_path, **sections) -> TrainConfig:
    data = {
        "data": {"task": ASSET, "split": "test", "eval_split": None, "n_train": 2},
        "method": {"latent_steps": 1, "eval_max_new_tokens": 3},
        "optim": {"steps": 1, "batch_size": 1},
        "run": {"out": str(tmp_path / "run"), "report_to": []},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return TrainConfig.model_validate(data)


def test_self_targets_sample_with_a_generator_on_the_model_device(tmp_path, monkeypatch):
    """`targets: self` on CUDA crashed: the sampler's generator was made on the CPU whatever the model's device."""
    made: list[object] = []
    real = torch.Generator

    class Spy(real):
        def __new__(cls, device=None):  # None: made without saying where (the CPU, whatever the model)
            made.append(device)
            return real(device=device or "cpu")

    monkeypatch.setattr(torch, "Generator", Spy)
    backbone = tiny_backbone("llama")
    trainer = DiffMASTrainer(_cfg(tmp_path, data={"targets": "self", "self_samples": 2}), backbone=backbone)
    with contextlib.suppress(ValueError):  # a random tiny model may answer nothing right: no targets
        trainer.setup()
    assert made and all(d is not None and torch.device(d) == backbone.device for d in made), made


def test_generator_on_keeps_a_generator_already_on_the_device():
    g = torch.Generator().manual_seed(3)
    assert generator_on(g, torch.device("cpu")) is g
    assert generator_on(None, torch.device("cpu")) is None


def _ladder(**extra):
    from diffmas.compare import CompareConfig

    return CompareConfig.model_validate({"task": ASSET, "methods": ["diffmas"], **extra})


def test_ladder_training_follows_the_top_level_device_and_dtype(tmp_path):
    """The ladder built the training config from `training:` only, so its rungs trained on cpu / float32."""
    from diffmas.training.ladder import ladder_train_config

    cfg = _ladder(device="cuda", dtype="bfloat16", model="some/model")
    train = ladder_train_config(
        model=cfg.model, dtype=cfg.dtype, device=cfg.device, task=cfg.task, split="train", n_train=None,
        latent_steps=2, realign="ridge", roles=None, seed=0, training=cfg.training, overrides={},
        out_dir=tmp_path,
    )  # fmt: skip
    assert (train.model.name, train.model.dtype, train.model.device) == ("some/model", "bfloat16", "cuda")


def test_ladder_refuses_a_second_model_section():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="top-level model, dtype and device"):
        _ladder(training={"model": {"dtype": "bfloat16"}})


def test_a_comparison_saved_before_the_thinking_fields_still_resumes():
    """top_k and chat_template_kwargs at their defaults do not make an older run directory 'different'."""
    from diffmas.compare import _comparable

    now = _ladder().model_dump()
    old = {
        **now,
        "inference": {
            k: v for k, v in now["inference"].items() if k not in ("top_k", "chat_template_kwargs")
        },
    }
    assert _comparable(old) == _comparable(now)
    changed = _ladder(inference={"top_k": 20}).model_dump()
    assert _comparable(old) != _comparable(changed)
