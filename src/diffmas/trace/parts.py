"""The parts of a causal LM that the trace runs itself: decoder body, LM head (with what the model does after
it) and input embeddings, and the load-time check that head and transform reproduce the model's own logits."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def logit_transform(config: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What a causal LM does to its head's output before returning logits, read from its (text) config.

    The trace runs the head itself, so these must be applied here: Cohere multiplies by `logit_scale`, Granite
    divides by `logits_scaling`, Gemma 2/3 cap with `final_logit_softcapping` (c * tanh(x / c)). None: plain head.
    """
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    model_type = str(getattr(config, "model_type", ""))
    scale = getattr(config, "logit_scale", None)
    if model_type.startswith("cohere") and isinstance(scale, (int, float)):
        steps.append(lambda x: x * scale)
    scaling = getattr(config, "logits_scaling", None)
    if isinstance(scaling, (int, float)) and scaling != 1:
        steps.append(lambda x: x / scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and cap > 0:
        steps.append(lambda x: torch.tanh(x / cap) * cap)
    if not steps:
        return None

    def apply(logits: torch.Tensor) -> torch.Tensor:
        for step in steps:
            logits = step(logits)
        return logits

    return apply


@dataclass(frozen=True)
class ModelParts:
    """The pieces of a causal LM the trace needs: the decoder body (no head), the head and the input embeddings.

    `config` is the text config (a vision-language model such as Mistral3 nests it); `transform` is what the
    model applies after its head (softcapping, logit scaling), None for a plain linear head. `logits` is the one
    place that applies both: the trace, the static answer and `check_head` all call it.
    """

    body: nn.Module
    head: nn.Module
    embed: nn.Module
    config: Any
    cache_kwarg: str
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def of(cls, model: nn.Module) -> ModelParts:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # look through PEFT
        body = base.get_decoder()
        head = base.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(base).__name__} has no LM head; diffmas needs a causal LM")
        params = inspect.signature(body.forward).parameters
        cache_kwarg = "cache" if "cache" in params else "past_key_values"
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        return cls(
            body=body,
            head=head,
            embed=base.get_input_embeddings(),
            config=config,
            cache_kwarg=cache_kwarg,
            transform=logit_transform(config),
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's logits for body output `hidden`: the head, then whatever the model does after it."""
        logits = self.head(hidden)
        return self.transform(logits) if self.transform is not None else logits


def check_head(model: nn.Module, atol: float = 1e-3) -> None:
    """Fail clearly when the trace's logits (body, then `ModelParts.logits`) are not the model's own.

    A family that post-processes logits in a way `logit_transform` does not know would otherwise give silently
    wrong answers and losses; one forward of four tokens at load time catches it.
    """
    parts = ModelParts.of(model)
    vocab = int(parts.head.weight.shape[0])
    ids = torch.arange(1, 5, device=parts.embed.weight.device).clamp_max(vocab - 1).view(1, -1)
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
        got = parts.logits(parts.body(input_ids=ids).last_hidden_state).float()
    gap = (got - expected).abs().max().item()
    if not gap <= atol * max(1.0, expected.abs().max().item()):
        raise ValueError(
            f"{type(model).__name__} ({getattr(parts.config, 'model_type', '?')}): the trace's logits differ "
            f"from the model's own by {gap:.3g}; its head does something diffmas does not replicate "
            "(see diffmas.trace.logit_transform)"
        )
