"""Pad columns under each attention kernel: a left-pad column of the first segment has no real key
to attend to; nothing non-finite may reach the KV of pad columns (0 x NaN would poison later attention), and the
kernel is chosen at load (`attn_implementation`), flash-attention-2's requirements checked there."""

from __future__ import annotations

import pytest
import torch

from diffmas.testing import padded_trace, tiny_backbone, tiny_family, tiny_tokenizer
from diffmas.trace import LatentTrace

KERNELS = ("eager", "sdpa")


def _model(name: str, kernel: str, dtype: torch.dtype):
    model = tiny_backbone(name).model if name == "llama" else tiny_family(name, sliding_window=4)
    model.set_attn_implementation(kernel)
    return model.to(dtype)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_nan_or_inf_reaches_pad_columns(name, kernel, dtype):
    model = _model(name, kernel, dtype)
    with torch.no_grad():
        trace = padded_trace(model)
    assert (trace.attention_mask == 0).any()
    for layer in trace.cache.layers:
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
    assert torch.isfinite(trace.last_hidden).all()


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_eager_and_sdpa_agree_on_apadded_trace(name):
    hidden = []
    for kernel in KERNELS:
        with torch.no_grad():
            hidden.append(padded_trace(_model(name, kernel, torch.float32)).last_hidden)
    torch.testing.assert_close(hidden[0], hidden[1], atol=1e-4, rtol=1e-4)


def _saved(tmp_path):
    tiny_backbone("llama").model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def test_attn_implementation_is_chosen_at_load(tmp_path):
    from diffmas.backbones import load_backbone

    backbone = load_backbone(_saved(tmp_path), attn_implementation="eager")
    assert backbone.model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        load_backbone(tmp_path, attn_implementation="flash")


def test_flash_attention_2_requirements_are_checked_at_load(monkeypatch):
    from importlib import metadata

    from diffmas.backbones import check_attn_implementation

    cpu, bf16 = torch.device("cpu"), torch.bfloat16

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(ValueError, match="needs the flash-attn package"):
        check_attn_implementation("flash_attention_2", cpu, bf16)
    monkeypatch.setattr(metadata, "version", lambda name: "2.0.4")
    with pytest.raises(ValueError, match="top-left"):
        check_attn_implementation("flash_attention_2", cpu, bf16)
    monkeypatch.setattr(metadata, "version", lambda name: "2.7.0")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        check_attn_implementation("flash_attention_2", cpu, bf16)
    check_attn_implementation("sdpa", cpu, torch.float32)


def test_sliding_layers_under_flash_attention_2_refuse_a_batch():
    model = tiny_family("qwen3", sliding_window=4)
    model.config._attn_implementation = "flash_attention_2"  # the check reads the config; no kernel runs
    with pytest.raises(ValueError, match="count pad columns"):
        LatentTrace(model, 2)
    LatentTrace(model, 1)
