"""Heads and embeddings that are not plain linear maps, on tiny random models of each family:
the trace's logits are the model's own, realigned latents are on the scale of token embeddings, and every paper
backbone family either loads and runs or fails with a clear error."""

from __future__ import annotations

import pytest
import torch

from diffmas.realign import build_realigner
from diffmas.testing import FAMILIES, tiny_family, tiny_tokenizer
from diffmas.trace import LatentTrace, ModelParts, check_head

POST_PROCESSED = ("gemma2", "gemma3", "cohere", "granite")


@pytest.mark.parametrize("family", FAMILIES)
def test_trace_logits_equal_the_models_own(family):
    model = tiny_family(family)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    with torch.no_grad():
        trace = LatentTrace(model, 2)
        hidden = trace.append_tokens(prompts, "a")
        for i, p in enumerate(prompts):
            expected = model(input_ids=torch.tensor([p])).logits[0, -1]
            torch.testing.assert_close(trace.logits(hidden[i, -1]), expected, atol=1e-4, rtol=1e-4)
    check_head(model)


@pytest.mark.parametrize("family", POST_PROCESSED)
def test_post_processing_matters_for_these_heads(family):
    """The raw head differs from the model's logits here, so applying the head alone (as before) was wrong."""
    model = tiny_family(family)
    parts = ModelParts.of(model)
    assert parts.transform is not None
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        raw = parts.head(parts.body(input_ids=ids).last_hidden_state)
        assert (raw - model(input_ids=ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "qwen3", "cohere"])
@pytest.mark.parametrize("kind", ["norm", "ridge", "soft"])
def test_realigned_latents_are_on_the_scale_of_token_embeddings(family, kind):
    """Gemma scales embeddings by sqrt(d) inside the embedding module; latents are fed after it."""
    model = tiny_family(family)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        token_norm = embed(torch.arange(len(tiny_tokenizer()))).norm(dim=-1).mean()
        trace = LatentTrace(model, 1)
        trace.append_tokens([[5, 6, 7]], "a")
        latent = build_realigner(kind, model)(trace.last_hidden)
    ratio = (latent.norm(dim=-1) / token_norm).item()
    assert 0.8 < ratio < 1.25, ratio


def test_check_head_refuses_a_head_it_cannot_replicate(monkeypatch):
    model = tiny_family("qwen3")
    original = type(model).forward

    def doubled(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out.logits = out.logits * 2
        return out

    monkeypatch.setattr(type(model), "forward", doubled)
    with pytest.raises(ValueError, match="differ from the model's own"):
        check_head(model)


def _saved(model, tmp_path):
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return tmp_path


def test_mistral3_loads_through_its_vision_language_class(tmp_path):
    """AutoModelForCausalLM refuses Mistral3 (the paper's Mistral3-8B); the loader takes the VLM class."""
    from diffmas.backbones import load_backbone

    backbone = load_backbone(_saved(tiny_family("mistral3"), tmp_path))
    assert type(backbone.model).__name__ == "Mistral3ForConditionalGeneration"
    with torch.no_grad():
        trace = LatentTrace(backbone.model, 1)
        hidden = trace.append_tokens([[5, 6, 7]], "a")
        expected = backbone.model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    torch.testing.assert_close(trace.logits(hidden[0, -1]), expected, atol=1e-4, rtol=1e-4)


def test_a_model_without_a_causal_text_decoder_is_a_clear_error(tmp_path):
    from transformers import ViTConfig, ViTModel

    from diffmas.backbones import load_backbone

    vit = ViTModel(
        ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    vit.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="neither a causal LM nor"):
        load_backbone(tmp_path)
