"""The contract every inference method follows: questions in, one `MethodOutput` per question out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from diffmas.backbones import Backbone
from diffmas.decoding import DecodeConfig, Decoded, decode, stop_token_ids
from diffmas.realign import REALIGN_KINDS, Realigner, build_realigner
from diffmas.roles import Role, RoleChain, TextMessage, encode_prompt
from diffmas.trace import LatentTrace, RoleHook


@dataclass(frozen=True)
class MethodConfig:
    """Knobs shared by all methods. `latent_steps`/`realign` matter to latent methods, `upstream_*` to text ones."""

    latent_steps: int = 10
    realign: str = "ridge"
    max_new_tokens: int = 256
    upstream_max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    answer_stop: str | None = (
        None  # regex ending the Solver's answer (a task's `answer_stop`), upstream text unaffected
    )

    def __post_init__(self) -> None:
        if self.latent_steps < 0:
            raise ValueError(f"latent_steps must be >= 0, got {self.latent_steps}")
        if self.realign not in REALIGN_KINDS:
            raise ValueError(f"realign must be one of {REALIGN_KINDS}, got {self.realign!r}")
        DecodeConfig(
            self.max_new_tokens, self.temperature, self.top_p, self.answer_stop
        )  # validates the fields
        DecodeConfig(self.upstream_max_new_tokens, self.temperature, self.top_p)

    @property
    def solver_decoding(self) -> DecodeConfig:
        return DecodeConfig(self.max_new_tokens, self.temperature, self.top_p, self.answer_stop)

    @property
    def upstream_decoding(self) -> DecodeConfig:
        return DecodeConfig(self.upstream_max_new_tokens, self.temperature, self.top_p)


@dataclass(frozen=True)
class LatentMessage:
    """What an upstream agent wrote into the trace: `steps` latent columns [start, end) after its prompt."""

    role: str
    start: int
    end: int
    steps: int


AgentMessage = TextMessage | LatentMessage


@dataclass
class MethodOutput:
    """One question's result. `generated_tokens` counts every agent's decoded tokens; `trace_len` the real tokens
    (prompts, latents and answer) in the context the Solver ended with."""

    text: str
    answer: Decoded
    messages: list[AgentMessage] = field(default_factory=list)
    generated_tokens: int = 0
    trace_len: int = 0


class Method(ABC):
    """An inference method over one backbone and one role chain. Subclasses implement `run`."""

    name: ClassVar[str]

    def __init__(
        self,
        backbone: Backbone,
        roles: RoleChain | None = None,
        config: MethodConfig | None = None,
        *,
        realigner: Realigner | None = None,
        role_hook: RoleHook | None = None,
        checkpoint: bool = False,
    ):
        self.backbone = backbone
        self.roles = roles or RoleChain.default()
        self.config = config or MethodConfig()
        self.role_hook = role_hook
        self.checkpoint = checkpoint
        self._realigner = realigner
        self.stop_ids = stop_token_ids(backbone.model, backbone.tokenizer)

    @property
    def realigner(self) -> Realigner:
        """Built lazily: the ridge solve is only paid by methods that take latent steps."""
        if self._realigner is None:
            self._realigner = build_realigner(self.config.realign, self.backbone.model)
        return self._realigner

    def encode(self, role: Role, questions: Sequence[str], fmt: str, contexts: Sequence[str] | None = None):
        contexts = contexts or [""] * len(questions)
        return [
            encode_prompt(self.backbone.tokenizer, role.render(q, fmt, c), self.roles.system)
            for q, c in zip(questions, contexts)
        ]

    def new_trace(self, batch: int, start_positions: torch.Tensor | None = None) -> LatentTrace:
        return LatentTrace(
            self.backbone.model,
            batch,
            start_positions=start_positions,
            role_hook=self.role_hook,
            checkpoint=self.checkpoint,
        )

    def decode_solver(
        self, trace: LatentTrace, questions: Sequence[str], fmt: str, contexts=None, generator=None
    ) -> list[Decoded]:
        prompts = self.encode(self.roles.solver, questions, fmt, contexts)
        return decode(
            trace,
            prompts,
            self.roles.solver.name,
            self.backbone.tokenizer,
            self.config.solver_decoding,
            self.stop_ids,
            generator,
        )

    @abstractmethod
    def run(
        self, questions: Sequence[str], format_instruction: str, generator: torch.Generator | None = None
    ) -> list[MethodOutput]:
        """Answer a batch of questions (rendered, options included) with the task's answer-format instruction."""
