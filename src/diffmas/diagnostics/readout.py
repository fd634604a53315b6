"""Readout: what each writer "would say" at each latent step, the LM head's top token of the hidden state its
realigner is fed, and how often that is the item's answer. It tells an encoding a reader can take without learning
to decode (the answer's own token, which the `soft` realign feeds back almost as its embedding: the oracle
channel's code) from one only a trained reader could use, and shows a trained writer's code against the untrained
one's on the same items."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from diffmas.diagnostics.common import batches, questions_of
from diffmas.methods import Method, build_latent_trace
from diffmas.tasks.base import Item, Task


class _Recorder(nn.Module):
    """A realigner that passes through to the method's own and keeps every hidden state it is fed."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.seen.append(hidden.detach())
        return self.inner(hidden)


@dataclass(frozen=True)
class ReadoutResult:
    tokens: list[list[str]]  # per item: the top token at every latent step, the writers in chain order
    answer_rate: list[
        float
    ]  # per latent step (all writers in turn): the share of items whose top token opens the answer
    any_rate: float  # the share of items where some step's top token opens the answer
    common: list[tuple[str, int]]  # the most frequent top tokens over all steps
    n: int


def answer_openings(tokenizer, answer: str) -> set[int]:
    """The token ids an answer can start with as a next token (with and without a leading space)."""
    ids = set()
    for text in (answer.strip(), " " + answer.strip()):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        if tokens:
            ids.add(tokens[0])
    return ids


def latent_readout(
    method: Method, task: Task, items: Sequence[Item], *, batch_size: int = 16
) -> ReadoutResult:
    """Build each item's latent trace (no grad) and read the LM head's top token of every realigner input."""
    if not getattr(method, "takes_latents", False) or method.config.latent_steps < 1:
        raise ValueError("the readout needs a latent method with at least one latent step")
    tokenizer = method.backbone.tokenizer
    head = method.backbone.model.get_output_embeddings()
    own = method.realigner
    tokens: list[list[str]] = []
    hits: list[list[bool]] = []
    for batch in batches(items, batch_size):
        recorder = _Recorder(own)
        method.realigner = recorder
        try:
            questions, views = questions_of(task, batch)
            with torch.no_grad():
                build_latent_trace(method, questions, task.format_instruction, views=views)
                top = [head(h.to(head.weight.dtype)).argmax(dim=-1).tolist() for h in recorder.seen]
        finally:
            method.realigner = own
        for i, it in enumerate(batch):
            opens = answer_openings(tokenizer, it.answer)
            row = [step[i] for step in top]
            tokens.append([tokenizer.decode([t]) for t in row])
            hits.append([t in opens for t in row])
    steps = len(hits[0]) if hits else 0
    n = len(hits)
    common = Counter(t.strip() or repr(t) for row in tokens for t in row).most_common(5)
    return ReadoutResult(
        tokens=tokens,
        answer_rate=[sum(h[k] for h in hits) / n for k in range(steps)],
        any_rate=sum(any(h) for h in hits) / n,
        common=common,
        n=n,
    )
