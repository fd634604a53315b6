"""Task registry: `get_task(name_or_path)` returns a `Task` for a registered name, a family prefix
(`gym:<generator>`, `bigbench:<task>`) or a local JSONL file.

Task modules register themselves on import; they are imported at the bottom of this module so that
`get_task("gsm8k-100")` works after `import diffmas.tasks`. Constructing a task never downloads anything:
data is fetched on the first `load()`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffmas.tasks.base import ANSWER_TYPES, FORMAT_INSTRUCTIONS, AnswerType, Item, Task
from diffmas.tasks.jsonl import JsonlTask

_REGISTRY: dict[str, Callable[..., Task]] = {}
_PREFIXES: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a task factory under `name` (a class or a function returning a Task)."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def register_prefix(prefix: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a factory for a task family: `get_task(f"{prefix}:{arg}")` calls `factory(arg, **kw)`."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if prefix in _PREFIXES:
            raise ValueError(f"task prefix {prefix!r} is already registered")
        _PREFIXES[prefix] = factory
        return factory

    return deco


def registered_tasks() -> dict[str, Callable[..., Task]]:
    return dict(_REGISTRY)


def registered_prefixes() -> dict[str, Callable[..., Task]]:
    return dict(_PREFIXES)


def get_task(spec: str | Path, **kwargs) -> Task:
    """A registered task name, `prefix:arg` (e.g. `gym:basic_arithmetic`), or a path to a JSONL file."""
    spec_str = str(spec)
    if spec_str in _REGISTRY:
        return _REGISTRY[spec_str](**kwargs)
    prefix, sep, arg = spec_str.partition(":")
    if sep and prefix in _PREFIXES:
        if not arg:
            raise ValueError(f"task {spec_str!r}: give a name after '{prefix}:'")
        return _PREFIXES[prefix](arg, **kwargs)
    path = Path(spec_str)
    if path.suffix in {".jsonl", ".json"} or path.exists():
        return JsonlTask(path, **kwargs)
    known = ", ".join(sorted(_REGISTRY) + [f"{p}:<name>" for p in sorted(_PREFIXES)]) or "(none)"
    raise ValueError(f"unknown task {spec_str!r}: not a registered name ({known}) and not a file")


# Task families register themselves on import.
from diffmas.tasks import (  # noqa: E402, F401
    bigbench,
    champ,
    comm,
    gsm_symbolic,
    gym,
    hub_code,
    hub_math,
    hub_mcq,
    humaneval,
)

__all__ = [
    "ANSWER_TYPES",
    "FORMAT_INSTRUCTIONS",
    "AnswerType",
    "Item",
    "JsonlTask",
    "Task",
    "get_task",
    "register_prefix",
    "register_task",
    "registered_prefixes",
    "registered_tasks",
]
