"""The contract every inference method follows: questions in, one `MethodOutput` per question out."""

from __future__ import annotations

from abc import ABC
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from diffmas.backbones import Backbone
from diffmas.configs import CHANNELS, Channel, CompileMode, DecodingSpec, MethodSpec, default_of
from diffmas.decoding import DecodeConfig, Decoded, decode, stop_token_ids
from diffmas.realign import REALIGN_KINDS, Realigner, build_realigner
from diffmas.roles import Role, RoleChain, TextMessage, encode_prompt
from diffmas.thinking import prompt_opens_thinking, stop_after_thinking
from diffmas.trace import LatentTrace, RoleHook

Views = (
    Sequence[Sequence[str] | None] | None
)  # per question: one private view per agent of the chain, or None


_M, _D = MethodSpec, DecodingSpec  # the defaults' one definition (diffmas.configs)


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Knobs shared by all methods. `latent_steps`/`realign` matter to latent methods, `upstream_*` to text ones.
    Defaults are the config specs' (`diffmas.configs`); build one from a spec with `from_spec`."""

    latent_steps: int = default_of(_M, "latent_steps")
    realign: str = default_of(_M, "realign")
    max_new_tokens: int = default_of(_D, "max_new_tokens")
    upstream_max_new_tokens: int = default_of(_M, "upstream_max_new_tokens")
    temperature: float = default_of(_D, "temperature")
    top_p: float = default_of(_D, "top_p")
    answer_stop: str | None = (
        None  # regex ending the Solver's answer (a task's `answer_stop`), upstream text unaffected
    )
    channel: Channel = default_of(_M, "channel")  # what later agents read of the trace (see diffmas.trace)
    seed: int = 0  # seeds the controls that draw (the donor's derangement)
    top_k: int | None = default_of(_D, "top_k")
    # keyword arguments of the chat template (Qwen3's `enable_thinking`), for every agent's prompt
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    static_cache: bool = default_of(_D, "static_cache")  # decode every answer on a `trace.StaticAnswer`
    compile: CompileMode | None = default_of(
        _D, "compile"
    )  # torch.compile that answer's step (implies static)
    # `latents` channel: readers also see other roles' item-independent prompt prefixes (see diffmas.trace)
    show_prefix: bool = default_of(_M, "show_prefix")
    latent_layer: int | None = default_of(
        _M, "latent_layer"
    )  # the block a latent step feeds back (None: final)

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, got {self.channel!r}")
        if self.latent_steps < 0:
            raise ValueError(f"latent_steps must be >= 0, got {self.latent_steps}")
        if self.realign not in REALIGN_KINDS:
            raise ValueError(f"realign must be one of {REALIGN_KINDS}, got {self.realign!r}")
        self.solver_decoding  # noqa: B018 - validates the fields
        self.upstream_decoding  # noqa: B018

    @classmethod
    def from_spec(cls, spec: BaseModel, **settings: Any) -> MethodConfig:
        """The runtime config of a config section (`EvalConfig`, a training config's `method:`, ...): every field
        the two share, by name, then `settings` over them. The one copy from a spec to the runtime, so a new
        knob declared in both travels without further code."""
        shared = {f.name: getattr(spec, f.name) for f in fields(cls) if f.name in type(spec).model_fields}
        return cls(**{**shared, **settings})

    def decode_config(self, **settings: Any) -> DecodeConfig:
        """A `DecodeConfig` of this config's fields of the same name, `settings` over them."""
        shared = {f.name: getattr(self, f.name) for f in fields(DecodeConfig) if hasattr(self, f.name)}
        return DecodeConfig(**{**shared, **settings})

    @property
    def solver_decoding(self) -> DecodeConfig:
        """The answer stop fires only after a think block (a draft inside it is not the answer)."""
        return self.decode_config(stop_pattern=stop_after_thinking(self.answer_stop))

    @property
    def upstream_decoding(self) -> DecodeConfig:
        return self.decode_config(max_new_tokens=self.upstream_max_new_tokens, stop_pattern=None)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
    """An inference method over one backbone and one role chain. Subclasses implement `build_trace` (what the
    Solver reads) and, where they differ from "build the trace, then decode", `run`.

    Views: `views[i]` holds question i's private view per agent of `self.chain` (by position; the Solver last).
    Each agent's prompt gets its own view; methods with `sees_all_views` (single-agent skylines) give the Solver
    every view. `self.chain` is the chain the views refer to, even when a method trims `self.roles`.
    """

    name: ClassVar[str]
    sees_all_views: ClassVar[bool] = False
    takes_latents: ClassVar[bool] = False  # writes latent steps, so it needs a realigner
    rows_per_question: ClassVar[int] = (
        1  # trace rows a batch of questions takes per question (a batch's memory)
    )

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
        self.chain = self.roles
        self.config = config or MethodConfig()
        self.role_hook = role_hook
        self.checkpoint = checkpoint
        self._realigner = realigner
        self.stop_ids = stop_token_ids(backbone.model, backbone.tokenizer)
        # training's channel curriculum: rows of the next traces that read every column (None: none)
        self.visible_rows: torch.Tensor | None = None
        self._prefixes: dict[tuple[str, str], list[int]] = {}

    @property
    def realigner(self) -> Realigner:
        """Built lazily: the ridge solve is only paid by methods that take latent steps."""
        if self._realigner is None:
            self._realigner = build_realigner(self.config.realign, self.backbone.model)
        return self._realigner

    @realigner.setter
    def realigner(self, realigner: Realigner) -> None:
        """Swap the realigner (an oracle or a recorder wrapped around the method's own)."""
        self._realigner = realigner

    def view_of(self, role: Role, views: Sequence[str] | None) -> str:
        """The text `role` is shown of one question's views ("" when the question has none)."""
        if views is None:
            return ""
        agents = self.chain.roles
        if len(views) != len(agents):
            raise ValueError(
                f"an item has {len(views)} views but the role chain has {len(agents)} agents "
                f"({', '.join(r.name for r in agents)}); build the task with agents={len(agents)}"
            )
        if self.sees_all_views:
            return "\n".join(v for v in views if v)
        names = [r.name for r in agents]
        position = names.index(role.name) if role.name in names else len(names) - 1
        return views[position]

    def encode(
        self,
        role: Role,
        questions: Sequence[str],
        fmt: str,
        contexts: Sequence[str] | None = None,
        views: Views = None,
    ):
        contexts = contexts or [""] * len(questions)
        views = views or [None] * len(questions)
        prompts = []
        for q, c, v in zip(questions, contexts, views):
            view = self.view_of(role, v)
            if view and not role.takes_view:
                raise ValueError(
                    f"role {role.name!r} has no {{view}} placeholder, but the task gives agents private views: "
                    "use a role chain whose templates include {view} (for example `roles: comm`)"
                )
            prompts.append(
                encode_prompt(
                    self.backbone.tokenizer,
                    role.render(q, fmt, c, view),
                    self.roles.system,
                    self.config.chat_template_kwargs,
                )
            )
        return prompts

    def longest_prompt(
        self, role: Role, questions: Sequence[str], fmt: str, views: Views = None, contexts=None
    ) -> int:
        """Tokens of `role`'s longest prompt over these questions (a batch pads each segment to its longest)."""
        return max((len(p) for p in self.encode(role, questions, fmt, contexts, views)), default=0)

    def trace_columns(self, questions: Sequence[str], fmt: str, views: Views = None) -> int:
        """An upper bound on the columns of the longest trace this method builds for one of these questions when
        its answer ends (what `--batch-size auto` sizes the KV cache by). Here: the Solver's prompt and answer."""
        return self.longest_prompt(self.roles.solver, questions, fmt, views) + self.config.max_new_tokens

    def capacity(self, questions: Sequence[str], fmt: str, views: Views = None) -> int:
        """The columns to allocate a trace for these questions with, once (`trace_columns`): only without grad,
        where the cache writes into preallocated storage (under autograd it concatenates, and 0 means none)."""
        return 0 if torch.is_grad_enabled() else self.trace_columns(questions, fmt, views)

    def new_trace(
        self, batch: int, start_positions: torch.Tensor | None = None, capacity: int = 0
    ) -> LatentTrace:
        return LatentTrace(
            self.backbone.model,
            batch,
            start_positions=start_positions,
            role_hook=self.role_hook,
            checkpoint=self.checkpoint,
            channel=self.config.channel,
            capacity=capacity,
            visible_rows=self.visible_rows,
            show_prefix=self.config.show_prefix,
            latent_layer=self.config.latent_layer,
        )

    def template_prefix(self, role: Role, fmt: str) -> list[int]:
        """The tokens every prompt of `role` starts with whatever the item (system prompt, template text before
        the question or view): the common prefix of prompts rendered for probe items that differ from their
        first character (so a template token that would merge with item text is left out)."""
        key = (role.name, fmt)
        if key not in self._prefixes:
            probes = ["0", "Z", " z", "\n?", "(x"]
            prompts = [
                encode_prompt(
                    self.backbone.tokenizer,
                    role.render(p, fmt, "", p if role.takes_view else ""),
                    self.roles.system,
                    self.config.chat_template_kwargs,
                )
                for p in probes
            ]
            self._prefixes[key] = prompts[0][: min(_common(prompts[0], q) for q in prompts[1:])]
        return self._prefixes[key]

    def prefix_lengths(self, role: Role, prompts: Sequence[Sequence[int]], fmt: str) -> list[int] | None:
        """Per prompt, how many first tokens are `role`'s item-independent prefix (None unless the channel shows
        prefixes): each row shows only tokens equal to the template's, so what it shows is the same for every
        item."""
        if not self.config.show_prefix:
            return None
        prefix = self.template_prefix(role, fmt)
        return [_common(prefix, p) for p in prompts]

    def build_trace(
        self, questions: Sequence[str], fmt: str, views: Views = None, *, grad_last: int | None = None
    ) -> tuple[LatentTrace, list[AgentMessage]]:
        """The trace the Solver reads before its own prompt (empty here: a single agent), with what was written.

        Training calls it too (with grad), so a method's trace is built the same way to train and to answer."""
        return self.new_trace(len(questions), capacity=self.capacity(questions, fmt, views)), []

    def decode_solver(
        self,
        trace: LatentTrace,
        questions: Sequence[str],
        fmt: str,
        contexts=None,
        generator=None,
        views=None,
    ) -> list[Decoded]:
        prompts = self.encode(self.roles.solver, questions, fmt, contexts, views)
        config = self.config.solver_decoding
        if config.stop_pattern and prompts and prompt_opens_thinking(self.backbone.tokenizer, prompts[0]):
            # the template opened the think block (one template for the batch): stop only after `</think>`
            config = replace(config, stop_pattern=stop_after_thinking(self.config.answer_stop, opened=True))
        return decode(
            trace, prompts, self.roles.solver.name, self.backbone.tokenizer, config, self.stop_ids, generator
        )

    def run(
        self,
        questions: Sequence[str],
        format_instruction: str,
        generator: torch.Generator | None = None,
        views: Views = None,
    ) -> list[MethodOutput]:
        """Answer a batch of questions (rendered, options included) with the task's answer-format instruction."""
        trace, messages = self.build_trace(questions, format_instruction, views)
        answers = self.decode_solver(trace, questions, format_instruction, generator=generator, views=views)
        return self.outputs(answers, messages)

    @staticmethod
    def outputs(answers: Sequence[Decoded], messages: Sequence[AgentMessage]) -> list[MethodOutput]:
        return [
            MethodOutput(
                text=a.text,
                answer=a,
                messages=list(messages),
                generated_tokens=len(a.token_ids),
                trace_len=a.trace_len,
            )
            for a in answers
        ]
