"""A backbone split over devices (device_map, offload) is refused with an error that names the split."""

from __future__ import annotations

import pytest
import torch

from diffmas.backbones import Backbone, check_one_device
from diffmas.testing import tiny_backbone


def test_a_model_on_one_device_is_accepted():
    bb = tiny_backbone("llama")
    check_one_device(bb.model)
    assert Backbone(bb.model, bb.tokenizer, bb.name).device == torch.device("cpu")


def test_a_device_map_over_two_devices_is_refused():
    bb = tiny_backbone("llama")
    bb.model.hf_device_map = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 1, "lm_head": 1}
    with pytest.raises(ValueError, match=r"device_map \['0', '1'\]"):
        Backbone(bb.model, bb.tokenizer, bb.name)


def test_a_single_device_map_is_accepted():
    bb = tiny_backbone("llama")
    bb.model.hf_device_map = {"": "cpu"}
    Backbone(bb.model, bb.tokenizer, bb.name)


def test_weights_offloaded_to_meta_are_refused():
    bb = tiny_backbone("qwen2")
    bb.model.model.layers[1].to("meta")  # what accelerate's disk/CPU offload leaves in the module tree
    with pytest.raises(ValueError, match=r"\['cpu', 'meta'\]"):
        Backbone(bb.model, bb.tokenizer, bb.name)
