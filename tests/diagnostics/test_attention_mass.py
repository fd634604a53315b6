"""Attention mass on the latent columns: the weights come through the trace, sum to one, and follow the channel."""

from __future__ import annotations

import pytest
import torch

from diffmas.diagnostics.attention import attention_mass
from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.testing import tiny_backbone


@pytest.fixture
def eager():
    backbone = tiny_backbone("llama")
    backbone.model.set_attn_implementation("eager")
    return backbone


@pytest.mark.parametrize("channel", ["latents", "full"])
def test_masses_sum_to_one_and_follow_the_channel(eager, channel):
    task = load_task("secret", 2)
    method = make_method(eager, chain_for(2), task, Setting(channel=channel, latent_steps=2))
    rows = attention_mass(method, task, task.load("test")[:3], batch_size=2)
    assert [r.layer for r in rows] == [0, 1]
    for r in rows:
        assert r.latent + r.upstream_prompt + r.own == pytest.approx(1.0, abs=1e-4)
        assert 0 < r.latent_first <= r.latent < 1 and 0 < r.uniform_latent < 1
        if channel == "latents":
            assert r.upstream_prompt == pytest.approx(0.0, abs=1e-6)
        else:
            assert r.upstream_prompt > 1e-3
    if (
        channel == "latents"
    ):  # the reader sees fewer columns, so the latent share of a uniform reader is larger
        full = attention_mass(
            make_method(eager, chain_for(2), task, Setting(channel="full", latent_steps=2)),
            task,
            task.load("test")[:3],
            batch_size=2,
        )
        assert rows[0].uniform_latent > full[0].uniform_latent


def test_batch_equals_alone(eager):
    task = load_task("secret", 2)
    method = make_method(eager, chain_for(2), task, Setting(latent_steps=2))
    items = task.load("test")[:3]
    batched = attention_mass(method, task, items, batch_size=3)
    alone = [attention_mass(method, task, [it], batch_size=1) for it in items]
    for li, row in enumerate(batched):
        for field in ("latent", "latent_first", "own", "uniform_latent"):
            mean = sum(getattr(a[li], field) for a in alone) / 3
            assert getattr(row, field) == pytest.approx(mean, abs=1e-4), field


def test_attention_weights_need_eager(llama):
    task = load_task("secret", 2)
    method = make_method(llama, chain_for(2), task, Setting(latent_steps=1))
    with pytest.raises(ValueError, match="eager"):
        attention_mass(method, task, task.load("test")[:1])


def test_append_attending_matches_append_tokens(eager):
    """The recorded forward computes what a plain append does (same hidden states), and its weights are a
    distribution over the trace's columns with nothing on masked ones."""
    task = load_task("secret", 2)
    method = make_method(eager, chain_for(2), task, Setting(latent_steps=2))
    from diffmas.methods import build_latent_trace

    items = task.load("test")[:2]
    q, v = [task.render_question(it) for it in items], [it.views for it in items]
    seqs = [[5, 6, 7], [8, 9]]
    with torch.no_grad():
        a, _ = build_latent_trace(method, q, task.format_instruction, views=v)
        b, _ = build_latent_trace(method, q, task.format_instruction, views=v)
        hidden_a, weights = a.append_attending(seqs, "solver")
        hidden_b = b.append_tokens(seqs, "solver", "answer")
    torch.testing.assert_close(hidden_a, hidden_b, atol=1e-5, rtol=0)
    assert len(weights) == 2 and weights[0].shape[-1] == a.width
    torch.testing.assert_close(weights[1][1, :, 1:].sum(-1), torch.ones(4, 2), atol=1e-5, rtol=0)
    hidden = a.visible_mask("solver")[1] == 0
    assert float(weights[1][1, :, 1:, hidden].abs().max()) < 1e-6
