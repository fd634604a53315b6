"""Realignment: map a last-layer hidden state back into input-embedding space so it can be fed as the next input.

The output space (what the LM head reads) and the input space (what the embedding table writes) differ, and their
norms differ a lot. Every realigner therefore ends with a rescale to the mean input-embedding row norm, as the
embedding module outputs it (Gemma scales its rows by sqrt(d) inside the module).

- `norm`:    rescale only.
- `ridge`:   e = h @ M, M = (W_out^T W_out + lambda I)^-1 W_out^T W_in, then rescale (training-free; LatentMAS).
             With tied embeddings W_out = W_in, so M is close to the identity.
- `learned`: a trainable linear map initialised from `ridge`, then rescale.
- `soft`:    e = softmax(h W_out^T) W_in, the expected input embedding under the model's own next-token
             distribution ("soft tokens", as in Soft Thinking, Zhang et al. 2025), then rescale. Where the
             distribution is peaked the latent step is close to feeding back the greedy token, so a latent chain
             starts from what the model would have said; the map stays differentiable, so training can steer it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from diffmas.items import Item

REALIGN_KINDS: tuple[str, ...] = ("norm", "ridge", "learned", "soft")
RIDGE_LAMBDA = 1e-5


def embedding_matrices(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_in, W_out) of a causal LM, each [vocab, d]; a PEFT wrapper is looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    w_in = base.get_input_embeddings().weight
    head = base.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(base).__name__} has no output embeddings (LM head); it is not a causal LM")
    return w_in, head.weight


def input_embedding_scale(model: nn.Module) -> float:
    """How much the embedding module scales its table rows (Gemma: sqrt(d)); 1.0 for a plain nn.Embedding.

    A latent is fed as `inputs_embeds`, after the embedding module, so its norm must match the module's output,
    not the raw table rows: Gemma's latents were otherwise sqrt(d) too small. Scaling the body does
    after the embeddings (Granite's `embedding_multiplier`) applies to latents and tokens alike and needs nothing.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embed = base.get_input_embeddings()
    ids = torch.arange(min(64, embed.weight.shape[0]), device=embed.weight.device)
    with torch.no_grad():
        rows = embed.weight[ids].float().norm()
        out = embed(ids).float().norm()
    return float(out / rows) if rows > 0 else 1.0


def ridge_matrix(w_out: torch.Tensor, w_in: torch.Tensor, lam: float = RIDGE_LAMBDA) -> torch.Tensor:
    """The least-squares map from output space to input space, M = (W_out^T W_out + lam I)^-1 W_out^T W_in.

    Computed in float64: W_out^T W_out is badly conditioned for large vocabularies and lambda is tiny.
    """
    wo = w_out.detach().double()
    wi = w_in.detach().double()
    gram = wo.T @ wo
    gram += lam * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram, wo.T @ wi)


class Realigner(nn.Module):
    """Base: subclasses map h -> e before the shared norm rescale."""

    kind: str = "norm"

    def __init__(self, target_norm: float):
        super().__init__()
        self.register_buffer("target_norm", torch.tensor(float(target_norm)), persistent=True)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        e = self.project(hidden)
        norm = e.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return e * (self.target_norm.to(e.dtype) / norm)


class NormRealigner(Realigner):
    kind = "norm"


class RidgeRealigner(Realigner):
    kind = "ridge"

    def __init__(self, target_norm: float, matrix: torch.Tensor):
        super().__init__(target_norm)
        self.register_buffer("matrix", matrix, persistent=True)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.matrix.to(hidden.dtype)


class LearnedRealigner(Realigner):
    """A trainable d x d map, initialised from the ridge solution so training starts from LatentMAS."""

    kind = "learned"

    def __init__(self, target_norm: float, matrix: torch.Tensor):
        super().__init__(target_norm)
        self.matrix = nn.Parameter(matrix.clone())

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.matrix.to(hidden.dtype)


class SoftRealigner(Realigner):
    """The next-token distribution's expected input embedding. Reads the model's own head and embedding weights
    (kept as plain references, not parameters or buffers: nothing is copied, saved or trained here)."""

    kind = "soft"

    def __init__(self, target_norm: float, w_out: torch.Tensor, w_in: torch.Tensor):
        super().__init__(target_norm)
        self._weights = (w_out, w_in)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        w_out, w_in = self._weights
        probs = torch.softmax((hidden @ w_out.T.to(hidden.dtype)).float(), dim=-1)
        return (probs @ w_in.float()).to(hidden.dtype)


def build_realigner(kind: str, model: nn.Module, lam: float = RIDGE_LAMBDA) -> Realigner:
    """Build a realigner for `model`, on the model's device, in float32 (cast to the hidden dtype when applied)."""
    if kind not in REALIGN_KINDS:
        raise ValueError(f"unknown realign {kind!r}: choose one of {REALIGN_KINDS}")
    w_in, w_out = embedding_matrices(model)
    target = w_in.detach().float().norm(dim=-1).mean().item() * input_embedding_scale(model)
    if kind == "norm":
        realigner: Realigner = NormRealigner(target)
    elif kind == "soft":
        realigner = SoftRealigner(target, w_out, w_in)
    else:
        matrix = ridge_matrix(w_out, w_in, lam).float()
        realigner = RidgeRealigner(target, matrix) if kind == "ridge" else LearnedRealigner(target, matrix)
    return realigner.to(w_in.device)


def answer_slots(tokenizer, answer: str, slots: int) -> list[int]:
    """The token ids an oracle feeds into `slots` latent slots: the answer's tokens in order, the last repeated."""
    ids = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the answer {answer!r} has no tokens")
    return [ids[min(k, len(ids) - 1)] for k in range(slots)]


def writer_messages(item: Item, writers: int) -> list[str]:
    """What each of `writers` upstream agents should send for `item`, in chain order: the task's
    `meta["messages"]` (in a lookup chain, the name each agent's hop reaches), else the answer for every writer."""
    messages = item.meta.get("messages")
    if messages is None:
        return [item.answer] * writers
    if not isinstance(messages, list | tuple) or len(messages) != writers:
        raise ValueError(
            f"item {item.id}: meta.messages must list one message per upstream writer ({writers}), got {messages!r}"
        )
    return [str(m) for m in messages]


def message_ids(tokenizer, messages: list[list[str]], slots: int) -> torch.Tensor:
    """[B, W * slots]: each row's writers' messages, `slots` token ids each (`answer_slots`), writer after writer:
    the order in which the chain's writers take their latent steps."""
    return torch.tensor(
        [[t for m in row for t in answer_slots(tokenizer, m, slots)] for row in messages], dtype=torch.long
    )


def slot_embeddings(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """[B, S, d]: token ids ([B, S], `message_ids`) through the model's input embedding module (no grad): what an
    oracle feeds its latent slots."""
    embed = model.get_input_embeddings()
    with torch.no_grad():
        return embed(ids.to(embed.weight.device)).detach()


def answer_embeddings(model: nn.Module, tokenizer, answers: list[str], slots: int) -> torch.Tensor:
    """[B, slots, d]: each answer's `answer_slots` as slot embeddings (one writer's message per row)."""
    return slot_embeddings(model, message_ids(tokenizer, [[a] for a in answers], slots))


class OracleRealigner(nn.Module):
    """The oracle channel: the trace's latent step j (counted over its writers, in chain order) is fed the
    embedding in slot j mod S of what `feed` gave ([B, S, d]: the answer's token embeddings, or each writer's
    message in turn, `message_ids`), whatever the hidden state. It isolates the reader: a Solver that
    cannot learn to read the answer from these columns has a plumbing problem, not an encoding one (the `oracle`
    diagnostic); a Solver that has learned to read them gives the writer a reader to learn to write for (the
    training's `method.oracle_warmup`).

    With an `inner` realigner only the rows marked in `feed(..., rows=)` take the oracle, the others the inner
    realigner's output, and an unfed oracle (evaluation) is the inner realigner itself. Without one, an unfed
    oracle is an error.

    With a `head` ([V, d], the model's output embedding) and the slots' token ids (`feed(..., ids=)`), each latent
    step also scores the writer's own next-token distribution against the slot's token (cross-entropy, every
    row, oracle-fed or not) into `message_losses`: the training's `method.message_loss`, which teaches the writer
    the code the reader learned on the oracle directly. Unlike the soft realign's expected embedding, whose
    gradient vanishes while the answer's token has little probability, the cross-entropy's does not."""

    kind = "oracle"

    def __init__(self, inner: nn.Module | None = None, head: torch.Tensor | None = None) -> None:
        super().__init__()
        self.inner = inner
        self._head = (head,)  # a plain reference to the model's weight (a tuple keeps it out of state_dict)
        self.embeds: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None
        self.step = 0
        self.message_losses: list[torch.Tensor] = []

    def feed(
        self, embeds: torch.Tensor, rows: torch.Tensor | None = None, ids: torch.Tensor | None = None
    ) -> None:
        """The next trace's slots, [B, m, d]; `rows` ([B] bool) the rows that take them (None: all); `ids`
        ([B, m]) the slots' token ids, for the message loss (needs a `head`)."""
        if embeds.dim() != 3:
            raise ValueError(f"oracle embeddings must be [batch, slots, d], got {tuple(embeds.shape)}")
        if rows is not None and (rows.dim() != 1 or rows.shape[0] != embeds.shape[0]):
            raise ValueError(f"oracle rows must be [{embeds.shape[0]}], got {tuple(rows.shape)}")
        if rows is not None and self.inner is None and not bool(rows.all()):
            raise ValueError("an oracle without an inner realigner has nothing to feed the other rows")
        if ids is not None and tuple(ids.shape) != tuple(embeds.shape[:2]):
            raise ValueError(f"oracle ids must be {list(embeds.shape[:2])}, got {list(ids.shape)}")
        if ids is not None and self._head[0] is None:
            raise ValueError("oracle ids score the writer's steps, which needs the model's head (`head=`)")
        self.embeds, self.rows, self.ids, self.step = embeds, rows, ids, 0
        self.message_losses = []

    def clear(self) -> None:
        """Back to the inner realigner alone (after the training step that fed it)."""
        self.embeds, self.rows, self.ids, self.step = None, None, None, 0
        self.message_losses = []

    def message_loss(self) -> torch.Tensor | None:
        """The mean over this trace's latent steps of the writer's cross-entropy on the slot tokens (None: no
        ids fed, or no step ran)."""
        if not self.message_losses:
            return None
        return torch.stack(self.message_losses).mean()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.embeds is None:
            if self.inner is None:
                raise RuntimeError("the oracle realigner has not been fed this batch's answers")
            return self.inner(hidden)
        if self.embeds.shape[0] != hidden.shape[0]:
            raise ValueError(f"oracle fed {self.embeds.shape[0]} rows, the trace has {hidden.shape[0]}")
        slot = self.step % self.embeds.shape[1]
        self.step += 1
        head = self._head[0]
        if self.ids is not None and head is not None:
            logits = (hidden @ head.T.to(hidden.dtype)).float()
            self.message_losses.append(F.cross_entropy(logits, self.ids[:, slot].to(logits.device)))
        oracle = self.embeds[:, slot].to(hidden.dtype)
        if self.rows is None or bool(self.rows.all()):
            return oracle
        assert self.inner is not None  # feed refuses partial rows without one
        own = self.inner(hidden)
        return torch.where(self.rows.to(hidden.device).view(-1, 1), oracle, own.to(hidden.dtype))
