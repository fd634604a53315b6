"""What the commands share: errors printed as one line, `KEY=VALUE` flags, and task arguments checked against the
task before anything loads (a misspelt argument was a `TypeError` traceback from deep inside the task)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape


def fail(console: Console, message: object, code: int = 2, label: str = "error") -> NoReturn:
    """Print `label: message` as one logical line (no wrapping, no markup read in it) and exit with `code`."""
    console.print(f"[red]{label}:[/red] {escape(str(message))}", soft_wrap=True)
    raise typer.Exit(code)


def warn(console: Console, message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def key_values(args: list[str] | None, flag: str) -> dict[str, Any]:
    """`KEY=VALUE` flags as a mapping, values read as YAML (`true`, `3`, `[1, 2]`), dotted keys nested."""
    from diffmas.configs import apply_overrides

    try:
        return apply_overrides({}, list(args or []))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from e


def task_factory(task: str) -> tuple[Callable[..., Any], str]:
    """The factory `get_task(task, ...)` calls, and the name to show for it; ValueError for an unknown task."""
    from diffmas.tasks import registered_prefixes, registered_tasks
    from diffmas.tasks.jsonl import TASK_FILE_SUFFIXES, JsonlTask

    tasks = registered_tasks()
    if task in tasks:
        return tasks[task], f"task {task!r}"
    prefix, sep, _ = task.partition(":")
    if sep and prefix in registered_prefixes():
        return registered_prefixes()[prefix], f"task family {prefix + ':'!r}"
    path = Path(task)
    if path.suffix.lower() in TASK_FILE_SUFFIXES or path.exists():
        return JsonlTask, f"the task file {task!r}"
    from diffmas.tasks import get_task

    get_task(task)  # raises the registry's own error, which lists the known names
    raise AssertionError("unreachable")  # pragma: no cover


def check_task_args(task: str, task_args: Mapping[str, Any], where: str = "--task-arg") -> None:
    """Refuse task arguments the task does not take, naming the ones it does (before data or model load)."""
    factory, label = task_factory(task)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - a factory without a signature takes what it takes
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    taken = [
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    if label.startswith("task family"):
        taken = taken[1:]  # the name after the prefix is given by the task spec itself
    unknown = [k for k in task_args if k not in taken]
    if unknown:
        raise ValueError(
            f"{label} takes no argument {', '.join(map(repr, unknown))} ({where}); "
            f"it takes: {', '.join(taken) if taken else 'none'}"
        )


def dataset_hint(error: Exception, flag: str) -> str:
    """The dataset error with the way to pass a local file from this command line (`flag`)."""
    return (
        f"{error} On the command line: {flag} (a local .jsonl/.json/.csv/.parquet in the dataset's columns)."
    )
