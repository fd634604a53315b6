"""Task registry: `get_task(name_or_path)` returns a `Task` for a registered name or a local JSONL file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffmas.tasks.base import ANSWER_TYPES, FORMAT_INSTRUCTIONS, AnswerType, Item, Task
from diffmas.tasks.jsonl import JsonlTask

_REGISTRY: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a task factory under `name` (a class or a function returning a Task)."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in _REGISTRY:
            raise ValueError(f"task {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def registered_tasks() -> dict[str, Callable[..., Task]]:
    return dict(_REGISTRY)


def get_task(spec: str | Path, **kwargs) -> Task:
    """A registered task name, or a path to a JSONL file with `question`/`answer` fields."""
    spec_str = str(spec)
    if spec_str in _REGISTRY:
        return _REGISTRY[spec_str](**kwargs)
    path = Path(spec_str)
    if path.suffix in {".jsonl", ".json"} or path.exists():
        return JsonlTask(path, **kwargs)
    known = ", ".join(sorted(_REGISTRY)) or "(none)"
    raise ValueError(f"unknown task {spec_str!r}: not a registered name ({known}) and not a file")


__all__ = [
    "ANSWER_TYPES",
    "FORMAT_INSTRUCTIONS",
    "AnswerType",
    "Item",
    "JsonlTask",
    "Task",
    "get_task",
    "register_task",
    "registered_tasks",
]
