"""A backbone handed to the trainer is put on the trainer's device (`place_backbone`): on a GPU, one left on the CPU
would train there silently. The move itself is checked here with the meta device (no GPU needed); tests/gpu checks
the trainer on CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffmas.testing import tiny_backbone
from diffmas.training.trainer import DiffMASTrainer, place_backbone

ASSET = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")


def test_a_backbone_elsewhere_is_moved_in_place():
    backbone = tiny_backbone("llama")
    model = backbone.model
    place_backbone(backbone, torch.device("meta"))  # any device other than the CPU it lies on
    assert {p.device.type for p in backbone.model.parameters()} == {"meta"}
    assert backbone.model is model  # the caller's model itself, not a copy


def test_a_backbone_already_there_is_left_alone():
    backbone = tiny_backbone("llama")
    before = [p.data_ptr() for p in backbone.model.parameters()]
    place_backbone(backbone, torch.device("cpu"))
    assert [p.data_ptr() for p in backbone.model.parameters()] == before


def test_the_trainer_refuses_a_backbone_split_over_devices(tmp_path):
    from diffmas.training import TrainConfig

    backbone = tiny_backbone("llama")
    backbone.model.model.layers[-1].to("meta")  # as a device_map or an unloaded layer would leave it
    cfg = TrainConfig.model_validate(
        {
            "model": {"name": "tiny", "device": "cpu"},
            "data": {"task": ASSET, "split": "test", "eval_split": None},
            "method": {"latent_steps": 1},
            "optim": {"steps": 1, "batch_size": 1},
            "run": {"out": str(tmp_path / "run"), "report_to": []},
        }
    )
    with pytest.raises(ValueError, match=r"model.device is cpu, but the backbone given lies on cpu, meta"):
        DiffMASTrainer(cfg, backbone=backbone).setup()
