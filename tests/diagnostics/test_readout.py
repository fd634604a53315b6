"""The readout diagnostic: the writers' top token at each latent step, and how often it opens the answer."""

from __future__ import annotations

import pytest
import torch

from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.diagnostics.readout import answer_openings, latent_readout
from diffmas.methods import build_latent_trace
from diffmas.testing import tiny_backbone


def test_readout_reads_the_head_on_every_realigner_input_and_restores_the_realigner():
    backbone = tiny_backbone("llama")
    task = load_task("secret", 2)
    items = task.load("test")[:3]
    method = make_method(backbone, chain_for(2), task, Setting(latent_steps=3, realign="ridge"))
    own = method.realigner
    result = latent_readout(method, task, items, batch_size=2)
    assert method.realigner is own
    assert result.n == 3 and all(len(row) == 3 for row in result.tokens)  # one writer, 3 steps
    # the first step's token is the head's argmax at the writer's last prompt position, recomputed here
    with torch.no_grad():
        trace, _ = build_latent_trace(
            make_method(backbone, chain_for(2), task, Setting(latent_steps=0)),
            [task.render_question(it) for it in items],
            task.format_instruction,
            views=[it.views for it in items],
        )
        first = backbone.model.get_output_embeddings()(trace.last_hidden).argmax(-1).tolist()
    assert [row[0] for row in result.tokens] == [backbone.tokenizer.decode([t]) for t in first]
    assert all(0 <= r <= 1 for r in result.answer_rate) and result.any_rate >= max(result.answer_rate)


class _SaysToken(torch.nn.Module):
    """A head whose top token is always `token`."""

    def __init__(self, vocab: int, token: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(vocab, 1))
        self.token = token

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*hidden.shape[:-1], self.weight.shape[0])
        logits[..., self.token] = 1.0
        return logits


def test_a_writer_that_says_the_answer_reads_out_at_100_percent_and_another_token_at_0(monkeypatch):
    backbone = tiny_backbone("llama")
    task = load_task("secret", 2)
    items = task.load("test")[:1]
    method = make_method(backbone, chain_for(2), task, Setting(latent_steps=2))
    vocab = backbone.model.get_output_embeddings().weight.shape[0]
    method.realigner  # noqa: B018 - built from the real head before the head is replaced
    answer = min(answer_openings(backbone.tokenizer, items[0].answer))
    for token, rate in ((answer, 1.0), ((answer + 1) % vocab, 0.0)):
        monkeypatch.setattr(backbone.model, "get_output_embeddings", lambda t=token: _SaysToken(vocab, t))
        result = latent_readout(method, task, items)
        assert result.answer_rate == [rate, rate] and result.any_rate == rate


def test_readout_refuses_a_method_without_latent_steps():
    backbone = tiny_backbone("llama")
    task = load_task("secret", 2)
    method = make_method(backbone, chain_for(2), task, Setting(latent_steps=0))
    with pytest.raises(ValueError, match="at least one latent step"):
        latent_readout(method, task, task.load("test")[:1])
