"""Long Solver targets: the chunked head + cross-entropy and the segmented target give the one-segment loss and
gradients, while no [target tokens x vocab] logit matrix and no target-wide forward exist."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from diffmas.adapters import LoraSpec, add_lora
from diffmas.methods import MethodConfig, get_method
from diffmas.testing import tiny_backbone
from diffmas.training import Batch
from diffmas.training.objective import build_trace, encode_target, solver_loss, split_rows

FMT = "Give the final answer in \\boxed{}."
QUESTIONS = ["What is 2 + 3?", "What is 10 times 4, and why is that so?"]
ROLES = ["planner", "critic", "refiner", "solver"]


def _method(checkpoint: bool, adapters: str = "per_role"):
    backbone, hook = add_lora(tiny_backbone("llama"), LoraSpec(r=4), adapters, ROLES)
    for name, p in backbone.model.named_parameters():  # LoRA B starts at zero: make every adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(len(name)))
    config = MethodConfig(latent_steps=2)
    return get_method("latent_mas", backbone, config=config, role_hook=hook, checkpoint=checkpoint)


def _batch(method, questions=QUESTIONS) -> Batch:
    tok = method.backbone.tokenizer
    texts = [
        "First add two and three: 2 + 3 = 5, so the answer is \\boxed{5}.",
        "Ten times four is forty because four tens are forty.\nThe answer is \\boxed{40}.",
    ]
    return Batch(list(questions), [encode_target(tok, texts[QUESTIONS.index(q)]) for q in questions])


def _one_segment_loss(method, trace, batch) -> torch.Tensor:
    """The objective as it was: prompt + target as ONE segment, the head and cross-entropy on every target
    position at once."""
    prompts = method.encode(method.roles.solver, batch.questions, FMT)
    sequences = [p + t for p, t in zip(prompts, batch.targets)]
    hidden = trace.append_tokens(sequences, method.roles.solver.name, "answer")
    width = hidden.shape[1]
    rows, cols, labels = [], [], []
    for i, target in enumerate(batch.targets):
        rows += [i] * len(target)
        cols += range(width - len(target) - 1, width - 1)
        labels += target
    logits = trace.logits(hidden[torch.tensor(rows), torch.tensor(cols)]).float()
    return F.cross_entropy(logits, torch.tensor(labels), reduction="sum")


def _loss_and_grads(method, batch, loss_fn) -> tuple[float, dict[str, torch.Tensor]]:
    model = method.backbone.model
    model.zero_grad(set_to_none=True)
    trace = build_trace(method, batch.questions, FMT, "full")
    loss = loss_fn(method, trace, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """Equal up to float rounding, relative to the tensor's scale (the wide tiny init makes grads large)."""
    return bool((a - b).abs().max() <= rtol * b.abs().max().clamp_min(1e-6))


def _assert_same(a: tuple[float, dict], b: tuple[float, dict], rtol: float = 1e-4) -> None:
    assert a[0] == pytest.approx(b[0], rel=rtol)
    assert a[1].keys() == b[1].keys() and any("lora_" in n for n in a[1])
    for name, g in a[1].items():
        assert _close(g, b[1][name], rtol), name
    # the solver's, and (grad mode full) an upstream role's, adapters both receive gradient
    assert any("solver" in n and g.abs().sum() > 0 for n, g in a[1].items())
    assert any("planner" in n and g.abs().sum() > 0 for n, g in a[1].items())


@pytest.mark.parametrize("checkpoint", [False, True])
def test_chunked_head_gives_the_unchunked_loss_and_grads(checkpoint):
    method = _method(checkpoint)
    batch = _batch(method)
    n_target = sum(len(t) for t in batch.targets)
    assert n_target % 7 != 0
    reference = _loss_and_grads(method, batch, _one_segment_loss)
    chunked = _loss_and_grads(method, batch, lambda m, t, b: solver_loss(m, t, b, FMT, head_chunk=7)[0])
    _assert_same(chunked, reference)


class _WidestLogits(TorchDispatchMode):
    """Records the most rows of any [rows, vocab] tensor an op creates (forward and backward), but the head's
    (transposed) weight [d, vocab]."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.vocab, self.hidden, self.rows = vocab, hidden, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab:
                if t.shape[-2] == self.hidden and t.dim() == 2:
                    continue
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def test_chunked_head_never_holds_more_than_one_chunk_of_logits():
    method = _method(checkpoint=False)
    batch = _batch(method)
    vocab, hidden = method.backbone.model.get_output_embeddings().weight.shape
    n_target = sum(len(t) for t in batch.targets)
    seen = {}
    for chunk in (7, 10_000):
        trace = build_trace(method, batch.questions, FMT, "full")
        with _WidestLogits(vocab, hidden) as probe:
            loss, n = solver_loss(method, trace, batch, FMT, head_chunk=chunk)
            loss.backward()
        seen[chunk] = probe.rows
    assert n == n_target and n_target != hidden
    assert seen[10_000] == n_target  # the probe sees the one-chunk matrix...
    assert seen[7] == 7  # ...and, chunked, one chunk's rows at a time, in the backward too


def test_split_rows_covers_every_row_with_bounded_pieces():
    rows = [list(range(23)), list(range(5)), list(range(16))]
    pieces = split_rows(rows, 8)
    assert len(pieces) == 3
    for i, row in enumerate(rows):
        assert [t for piece in pieces for t in piece[i]] == row
        assert all(1 <= len(piece[i]) <= 8 for piece in pieces)
    assert split_rows(rows, 100) == [rows]
    # a row shorter than the piece count caps it: every piece still has a real token per row
    capped = split_rows([list(range(40)), [1, 2]], 8)
    assert len(capped) == 2 and all(len(piece[1]) == 1 for piece in capped)


def _segmented(widths: list[int], chunk: int):
    def loss_fn(method, trace, batch):
        real = trace.append_tokens

        def recording(sequences, role, kind="prompt"):
            widths.append(max(len(s) for s in sequences))
            return real(sequences, role, kind)

        trace.append_tokens = recording
        return solver_loss(method, trace, batch, FMT, target_chunk=chunk, head_chunk=5)[0]

    return loss_fn


@pytest.mark.parametrize("checkpoint", [False, True])
def test_segmented_target_gives_the_one_segment_loss_batched_and_alone(checkpoint):
    method = _method(checkpoint)
    batch = _batch(method)
    lengths = [
        len(p) + len(t) for p, t in zip(method.encode(method.roles.solver, QUESTIONS, FMT), batch.targets)
    ]
    assert lengths[0] != lengths[1]  # rows of different lengths: pieces with pads in every segment
    chunk = 9
    widths: list[int] = []
    segmented = _loss_and_grads(method, batch, _segmented(widths, chunk))
    assert len(widths) >= 4 and max(widths) <= chunk  # several forwards, none wider than the chunk
    _assert_same(segmented, _loss_and_grads(method, batch, _one_segment_loss))

    # one question at a time, segmented, adds up to the batch
    alone = [_loss_and_grads(method, _batch(method, [q]), _segmented([], chunk)) for q in QUESTIONS]
    assert segmented[0] == pytest.approx(sum(a[0] for a in alone), rel=1e-4)
    for name, g in segmented[1].items():
        assert _close(g, sum(a[1][name] for a in alone), 1e-4), name


def test_segmented_target_under_no_grad_matches():
    method = _method(checkpoint=True)
    batch = _batch(method)
    with torch.no_grad():
        one = _one_segment_loss(method, build_trace(method, QUESTIONS, FMT, "full"), batch)
        trace = build_trace(method, QUESTIONS, FMT, "full")
        many, _ = solver_loss(method, trace, batch, FMT, target_chunk=6, head_chunk=4)
    assert float(many) == pytest.approx(float(one), rel=1e-5)
    # the Solver's pieces are recorded as one answer segment holding every real token
    answer = trace.segments[-1]
    assert answer.kind == "answer" and answer.role == "solver"
    assert list(answer.lengths) == [
        len(p) + len(t) for p, t in zip(method.encode(method.roles.solver, QUESTIONS, FMT), batch.targets)
    ]


def test_trainer_passes_target_chunk_on(tmp_path, monkeypatch):
    from pathlib import Path

    from diffmas.training import DiffMASTrainer, TrainConfig, objective

    widths: list[int] = []
    real = objective.target_states  # what the training loss appends the Solver's prompt and target with

    def recording(trace, role, prompts, targets, chunk, layers=()):
        widths.append(chunk)
        return real(trace, role, prompts, targets, chunk, layers)

    monkeypatch.setattr(objective, "target_states", recording)
    asset = str(Path(__file__).parents[1] / "assets" / "arith.jsonl")
    losses = []
    for chunk in (None, 4):
        cfg = TrainConfig.model_validate(
            {
                "data": {"task": asset, "split": "test", "eval_split": None},
                "method": {"latent_steps": 1, "gradient_checkpointing": True, "target_chunk": chunk},
                "optim": {"steps": 1, "batch_size": 2},
                "run": {"out": str(tmp_path / f"run{chunk}"), "report_to": [], "eval_at_end": False},
            }
        )
        trainer = DiffMASTrainer(cfg, backbone=tiny_backbone("llama"))
        trainer.setup()
        losses.append([row["loss"] for row in trainer.train()["history"] if "loss" in row][0])
    assert widths == [None, 4]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert TrainConfig.model_validate({"data": {"task": asset}}).method.target_chunk is None
