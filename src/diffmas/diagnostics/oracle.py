"""Oracle channel: every writer's latent slots hold the input embedding of the answer's tokens instead of its
realigned hidden state. A Solver that cannot learn to read *that* in the `latents` channel (where the latent columns
are all it sees of the writer) has a plumbing or attention-sink problem, not an encoding problem: with the answer
handed over, a Solver trained alone must reach about 100% on `secret`.

`OracleRealigner` is a realigner that ignores the hidden state; `OracleLatentMAS` feeds it each question's answer
(looked up by question and views) before building the trace, so training (`OracleTrainer`, the ordinary trainer with
this method) and evaluation both see the oracle. Slot k of a writer's m latent slots holds the answer's k-th token
(its last token once the answer is shorter than m), tokenized as it appears inside `\\boxed{}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffmas.backbones import Backbone
from diffmas.methods.base import Method
from diffmas.methods.latent_mas import LatentMAS
from diffmas.realign import OracleRealigner, answer_embeddings, answer_slots
from diffmas.tasks.base import Item, Task
from diffmas.training.trainer import DiffMASTrainer

OracleKey = tuple[str, tuple[str, ...]]


def oracle_key(question: str, views: Sequence[str] | None) -> OracleKey:
    """What identifies an item to the oracle: its rendered question and its views (a shared question with
    different views is a different item)."""
    return question, tuple(views or ())


class OracleLatentMAS(LatentMAS):
    """`latent_mas` whose writers' latent slots hold the answer (the oracle channel); `answers` maps
    `oracle_key(question, views)` to the answer text for every question it will see."""

    name = "oracle_latent"

    def __init__(self, backbone, roles=None, config=None, *, answers: Mapping[OracleKey, str], **kwargs):
        kwargs.pop("realigner", None)
        super().__init__(backbone, roles, config, realigner=OracleRealigner(), **kwargs)
        self.answers = dict(answers)

    def oracle_embeds(self, questions: Sequence[str], views) -> torch.Tensor:
        """[B, m, d]: each question's answer slots through the model's input embedding module (no grad)."""
        answers = []
        for i, q in enumerate(questions):
            key = oracle_key(q, views[i] if views else None)
            if key not in self.answers:
                raise KeyError(f"the oracle has no answer for question {q[:60]!r}")
            answers.append(self.answers[key])
        slots = max(1, self.config.latent_steps)
        return answer_embeddings(self.backbone.model, self.backbone.tokenizer, answers, slots)

    def build_trace(self, questions, fmt, views=None, *, grad_last=None):
        realigner = self.realigner
        assert isinstance(realigner, OracleRealigner)
        realigner.feed(self.oracle_embeds(questions, views))
        return super().build_trace(questions, fmt, views, grad_last=grad_last)


def answers_of(task: Task, items: Sequence[Item]) -> dict[OracleKey, str]:
    return {oracle_key(task.render_question(it), it.views): it.answer for it in items}


def plumbing_gap(method: OracleLatentMAS, task: Task, items: Sequence[Item]) -> float:
    """The largest difference between a writer's oracle latent columns (keys and values, every layer) and the
    columns the same writer computes when the answer's tokens are appended as tokens at those positions: 0 up to
    float rounding when the oracle feeds what it says it feeds."""
    from diffmas.methods import build_latent_trace

    questions = [task.render_question(it) for it in items]
    views = [it.views for it in items] if any(it.views for it in items) else None
    fmt = task.format_instruction
    m = method.config.latent_steps
    slots = [answer_slots(method.backbone.tokenizer, it.answer, max(1, m)) for it in items]
    with torch.no_grad():
        method.realigner.feed(method.oracle_embeds(questions, views))  # type: ignore[operator]
        trace, messages = build_latent_trace(method, questions, fmt, views=views)
        reference = method.new_trace(len(questions))
        for role in method.roles.upstream:
            reference.append_tokens(method.encode(role, questions, fmt, views=views), role.name)
            reference.append_tokens(slots, role.name, "latent")
    gap = 0.0
    for message in messages:
        ours = trace.column_states(message.start, message.end)
        theirs = reference.column_states(message.start, message.end)
        for (k, v), (k_ref, v_ref) in zip(ours, theirs, strict=True):
            gap = max(gap, float((k - k_ref).abs().max()), float((v - v_ref).abs().max()))
    return gap


class OracleTrainer(DiffMASTrainer):
    """The ordinary trainer with the oracle method: the training and held-out items' answers fill the oracle."""

    def _method(self, backbone: Backbone, **decoding: Any) -> Method:
        base = super()._method(backbone, **decoding)
        items = list(self.task.load(self.cfg.data.split))
        if self.cfg.data.eval_split:
            items += self.task.load(self.cfg.data.eval_split)
        return OracleLatentMAS(
            base.backbone,
            base.roles,
            base.config,
            answers=answers_of(self.task, items),
            role_hook=base.role_hook,
            checkpoint=base.checkpoint,
        )


def oracle_config(
    task: str,
    task_args: Mapping[str, Any],
    roles: str | None,
    *,
    model: str,
    out: str | Path,
    device: str = "cpu",
    channel: str = "latents",
    latent_steps: int = 2,
    steps: int = 60,
    batch_size: int = 4,
    lr: float = 1e-3,
    n_train: int | None = None,
    n_eval: int = 48,
    seed: int = 0,
    max_new_tokens: int = 14,
):
    """The Solver trained alone on the oracle channel: per-role adapters, `grad_mode: solver` (the trace is built
    without grad, so only the Solver's adapter learns; the writer stays the base model), evaluated at start and end."""
    from diffmas.training.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "model": {"name": model, "device": device},
            "data": {
                "task": task,
                "task_args": dict(task_args),
                "n_train": n_train,
                "eval_split": "test",
                "n_eval": n_eval,
            },
            "method": {
                "train_method": "diffmas",
                "channel": channel,
                "latent_steps": latent_steps,
                "realign": "norm",  # unused: the oracle replaces the realigner
                "grad_mode": "solver",
                "roles": roles,
                "eval_max_new_tokens": max_new_tokens,
            },
            "lora": {"adapters": "per_role"},
            "optim": {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": min(5, steps)},
            "run": {
                "out": str(out),
                "seed": seed,
                "eval_at_start": True,
                "report_to": [],
                "save_every": 10**6,
                "log_every": max(1, steps // 10),
            },
        }
    )


def train_oracle(cfg, backbone=None, console=None) -> dict[str, float]:
    """Train the Solver on the oracle channel (`oracle_config`); the held-out accuracy before and after, and the
    chance rate of those items. `backbone` (without adapters) is used as given and handed back as it came."""
    trainer = OracleTrainer(cfg, backbone=backbone, console=console)
    trainer.setup()
    try:
        result = trainer.train()
        eval_items = trainer.task.load(cfg.data.eval_split)[: cfg.data.n_eval]
        start = next(r for r in result["history"] if "eval_accuracy" in r)
        return {
            "accuracy_before": start["eval_accuracy"],
            "accuracy": result["eval"]["eval_accuracy"],
            "n": result["eval"]["eval_n"],
            "chance": trainer.task.chance_rate(eval_items) or float("nan"),
            "final_loss": next(r["loss"] for r in reversed(result["history"]) if "loss" in r),
        }
    finally:
        trainer.release()
