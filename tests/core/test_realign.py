"""Realigners: the norm rescale, ridge ~ identity when tied, ridge = least squares when untied."""

from __future__ import annotations

import pytest
import torch

from diffmas.realign import build_realigner, embedding_matrices, ridge_matrix


def test_every_realigner_outputs_the_mean_embedding_norm(backbone):
    w_in, _ = embedding_matrices(backbone.model)
    target = w_in.norm(dim=-1).mean()
    h = torch.randn(5, w_in.shape[1]) * 7
    for kind in ("norm", "ridge", "learned", "soft"):
        e = build_realigner(kind, backbone.model)(h)
        torch.testing.assert_close(e.norm(dim=-1), target.expand(5), atol=1e-4, rtol=1e-4)


def test_ridge_is_close_to_identity_with_tied_embeddings(llama):
    assert llama.model.config.tie_word_embeddings
    w_in, w_out = embedding_matrices(llama.model)
    assert w_in.data_ptr() == w_out.data_ptr()
    m = ridge_matrix(w_out, w_in)
    torch.testing.assert_close(m, torch.eye(m.shape[0], dtype=m.dtype), atol=1e-4, rtol=0)


def test_ridge_matches_least_squares_when_untied(qwen2):
    w_in, w_out = embedding_matrices(qwen2.model)
    assert w_in.data_ptr() != w_out.data_ptr()
    m = ridge_matrix(w_out, w_in)
    lstsq = torch.linalg.lstsq(w_out.detach().double(), w_in.detach().double()).solution
    torch.testing.assert_close(m, lstsq, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(m, torch.eye(m.shape[0], dtype=m.dtype), atol=1e-2)


def test_learned_realigner_starts_at_ridge_and_is_trainable(qwen2):
    ridge = build_realigner("ridge", qwen2.model)
    learned = build_realigner("learned", qwen2.model)
    h = torch.randn(3, qwen2.model.config.hidden_size)
    torch.testing.assert_close(ridge(h), learned(h))
    assert [n for n, p in learned.named_parameters() if p.requires_grad] == ["matrix"]
    assert not list(ridge.parameters())


def test_unknown_realign_is_a_clear_error(llama):
    with pytest.raises(ValueError, match="unknown realign 'foo'"):
        build_realigner("foo", llama.model)


def test_soft_realigner_is_the_expected_embedding_of_the_next_token(backbone):
    """A peaked next-token distribution gives (the direction of) that token's input embedding; a flat one the
    mixture. It holds no parameters or state of its own, and gradients reach the hidden state."""
    soft = build_realigner("soft", backbone.model)
    assert not list(soft.parameters()) and set(soft.state_dict()) == {"target_norm"}
    w_in, w_out = embedding_matrices(backbone.model)
    h = torch.randn(4, w_in.shape[1], requires_grad=True)
    probs = torch.softmax(h @ w_out.T, dim=-1)
    expected = probs @ w_in
    expected = expected * (w_in.norm(dim=-1).mean() / expected.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(soft(h), expected, atol=1e-5, rtol=1e-4)
    token = 7
    peaked = w_out[token].detach() * 1e3  # logits dominated by `token`
    direction = torch.nn.functional.cosine_similarity(soft(peaked[None])[0], w_in[token].detach(), dim=0)
    assert direction > 0.99
    soft(h).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
