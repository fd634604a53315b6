"""The task registry: names and family prefixes -> task factories, and `get_task`.

A leaf of the tasks package: the task modules register themselves here, and `diffmas.tasks` imports them after it,
so no module imports the package that imports it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffmas.tasks.base import Task
from diffmas.tasks.jsonl import TASK_FILE_SUFFIXES, JsonlTask

_REGISTRY: dict[str, Callable[..., Task]] = {}
_PREFIXES: dict[str, Callable[..., Task]] = {}


def _registrar(table: dict[str, Callable[..., Task]], key: str, what: str):
    """A decorator that files a factory under `key` in `table`, refusing a second one."""

    def deco(factory: Callable[..., Task]) -> Callable[..., Task]:
        if key in table:
            raise ValueError(f"{what} {key!r} is already registered")
        table[key] = factory
        return factory

    return deco


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a task factory under `name` (a class or a function returning a Task)."""
    return _registrar(_REGISTRY, name, "task")


def register_prefix(prefix: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a factory for a task family: `get_task(f"{prefix}:{arg}")` calls `factory(arg, **kw)`."""
    return _registrar(_PREFIXES, prefix, "task prefix")


def registered_tasks() -> dict[str, Callable[..., Task]]:
    return dict(_REGISTRY)


def registered_prefixes() -> dict[str, Callable[..., Task]]:
    return dict(_PREFIXES)


def get_task(spec: str | Path, **kwargs) -> Task:
    """A registered task name, `prefix:arg` (e.g. `gym:basic_arithmetic`), or a path to a JSONL/CSV/parquet file."""
    spec_str = str(spec)
    if spec_str in _REGISTRY:
        return _REGISTRY[spec_str](**kwargs)
    prefix, sep, arg = spec_str.partition(":")
    if sep and prefix in _PREFIXES:
        if not arg:
            raise ValueError(f"task {spec_str!r}: give a name after '{prefix}:'")
        return _PREFIXES[prefix](arg, **kwargs)
    path = Path(spec_str)
    if path.suffix.lower() in TASK_FILE_SUFFIXES or path.exists():
        return JsonlTask(path, **kwargs)
    known = ", ".join(sorted(_REGISTRY) + [f"{p}:<name>" for p in sorted(_PREFIXES)]) or "(none)"
    raise ValueError(f"unknown task {spec_str!r}: not a registered name ({known}) and not a file")
