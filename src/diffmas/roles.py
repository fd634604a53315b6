"""Roles: agents share one backbone and differ only by prompt. A chain is upstream roles followed by the decoder.

Templates use `{question}`, `{format}` (the task's answer-format instruction), `{context}` (text written by
upstream agents in text methods; empty in latent methods, where the context is the KV trace itself) and `{view}`
(the agent's private information when a task gives each agent its own view; see `Item.views`).

A chain is named (`default`, `comm`: the short prompts of the communication tasks) or a YAML file. A template is
rendered exactly as written (a peer's prompts that begin or end with a newline are reproduced token for token);
a chain with `strip: true`, as the packaged ones, strips the rendered prompt's surrounding whitespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDERS = {"question", "format", "context", "view"}
PACKAGED_CHAINS = ("default", "comm", "comm2", "comm3")


@dataclass(frozen=True)
class Role:
    """One agent's prompt. `strip`: strip the rendered prompt's surrounding whitespace (the packaged chains do)."""

    name: str
    template: str
    strip: bool = False

    @property
    def takes_view(self) -> bool:
        return "{view}" in self.template

    def render(self, question: str, format: str = "", context: str = "", view: str = "") -> str:
        template = self.template
        for name, value in (("context", context), ("view", view)):
            if not value:  # drop the placeholder's own line rather than leave it blank
                template = template.replace("{" + name + "}\n", "").replace("{" + name + "}", "")
        text = template.format(question=question, format=format, context=context, view=view)
        return text.strip() if self.strip else text


@dataclass(frozen=True)
class TextMessage:
    """What an upstream agent said, in text methods."""

    role: str
    text: str


def format_context(messages: list[TextMessage]) -> str:
    if not messages:
        return ""
    parts = [f"[{m.role.capitalize()}]: {m.text.strip()}" for m in messages]
    return "Messages from your team:\n" + "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class RoleChain:
    """Ordered roles; the last one (the Solver) decodes the answer. `system` is an optional system prompt."""

    roles: tuple[Role, ...]
    system: str | None = None

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValueError("a role chain needs at least one role (the Solver)")
        names = [r.name for r in self.roles]
        if len(set(names)) != len(names):
            raise ValueError(f"role names must be unique, got {names}")

    @property
    def upstream(self) -> tuple[Role, ...]:
        return self.roles[:-1]

    @property
    def solver(self) -> Role:
        return self.roles[-1]

    @classmethod
    def default(cls) -> RoleChain:
        return cls.packaged("default")

    @classmethod
    def packaged(cls, name: str) -> RoleChain:
        """A chain shipped with diffmas (`diffmas/prompts/<name>.yaml`)."""
        if name not in PACKAGED_CHAINS:
            raise ValueError(
                f"unknown role chain {name!r}: choose one of {PACKAGED_CHAINS} or give a YAML path"
            )
        text = resources.files("diffmas").joinpath(f"prompts/{name}.yaml").read_text(encoding="utf-8")
        return cls.from_mapping(yaml.safe_load(text), source=f"diffmas/prompts/{name}.yaml")

    @classmethod
    def load(cls, spec: str | Path | None) -> RoleChain:
        """None -> the default chain; a packaged name (`default`, `comm`); otherwise a YAML path."""
        if spec is None:
            return cls.default()
        if str(spec) in PACKAGED_CHAINS:
            return cls.packaged(str(spec))
        return cls.from_yaml(spec)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RoleChain:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"roles file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({e})") from e
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: object, source: str = "<roles>") -> RoleChain:
        if not isinstance(data, dict) or not isinstance(data.get("roles"), list):
            raise ValueError(f"{source}: expected a mapping with a 'roles' list")
        unknown = set(data) - {"roles", "system", "strip"}
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)} (allowed: roles, system, strip)")
        strip = data.get("strip", False)
        if not isinstance(strip, bool):
            raise ValueError(f"{source}: 'strip' must be true or false")
        roles = []
        for i, entry in enumerate(data["roles"]):
            if not isinstance(entry, dict) or set(entry) != {"name", "template"}:
                raise ValueError(f"{source}: roles[{i}] needs exactly the fields 'name' and 'template'")
            name, template = entry["name"], entry["template"]
            if not isinstance(name, str) or not isinstance(template, str):
                raise ValueError(f"{source}: roles[{i}] 'name' and 'template' must be strings")
            _check_template(template, f"{source}: roles[{i}] ({name})")
            roles.append(Role(name, template, strip))
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"{source}: 'system' must be a string or null")
        return cls(tuple(roles), system)

    def solver_only(self) -> RoleChain:
        return RoleChain((self.solver,), self.system)

    def to_mapping(self) -> dict[str, Any]:
        """The chain as `from_mapping` reads it, templates included: a trained system's manifest embeds it, so
        loading the system never depends on a roles file that may have moved or changed."""
        strips = {r.strip for r in self.roles}
        if len(strips) > 1:
            raise ValueError(
                "the roles of a chain strip alike: a roles file sets `strip` for the whole chain"
            )
        return {
            "system": self.system,
            "strip": strips.pop(),
            "roles": [{"name": r.name, "template": r.template} for r in self.roles],
        }


MAX_FORMAT_NUMBER = 10_000  # the largest width or precision a template's format spec may ask for


def _check_template(template: str, where: str) -> None:
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(
            f"{where}: not a valid template ({e}); write literal braces as {{{{ and }}}}"
        ) from None
    fields = {f for _, f, _, _ in parsed if f is not None}
    for _, field, spec, _ in parsed:
        if field is not None and spec:
            _check_format_spec(field, spec, where)
    bad = fields - _PLACEHOLDERS
    if bad:
        raise ValueError(f"{where}: unknown placeholders {sorted(bad)} (allowed: {sorted(_PLACEHOLDERS)})")
    if "question" not in fields:
        raise ValueError(f"{where}: the template must contain {{question}}")


def _check_format_spec(field: str, spec: str, where: str) -> None:
    """Refuse format specs that would build huge strings (`{question:>3000000000}` allocates gigabytes) or take
    their width from another field's text (a nested `{...}`)."""
    import re

    if "{" in spec:
        raise ValueError(f"{where}: {{{field}:{spec}}} nests a field in a format spec, which is not allowed")
    for number in re.findall(r"\d+", spec):
        if int(number) > MAX_FORMAT_NUMBER:
            raise ValueError(
                f"{where}: {{{field}:{spec}}} asks for a width or precision of {int(number):,}; "
                f"at most {MAX_FORMAT_NUMBER:,} is allowed"
            )


def encode_prompt(
    tokenizer, text: str, system: str | None = None, template_kwargs: Mapping[str, Any] | None = None
) -> list[int]:
    """Token ids of one agent turn: the chat template with a generation prompt where the model has one.
    `template_kwargs` reach the template (Qwen3's `enable_thinking`)."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, **dict(template_kwargs or {})
        )
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return list(ids)
    prefix = f"{system}\n\n" if system else ""
    return tokenizer(f"{prefix}User: {text}\nAssistant:", add_special_tokens=True)["input_ids"]
