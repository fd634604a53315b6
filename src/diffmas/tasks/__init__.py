"""Task registry: `get_task(name_or_path)` returns a `Task` for a registered name, a family prefix
(`gym:<generator>`, `bigbench:<task>`) or a local JSONL file.

The registry itself lives in `diffmas.tasks.registry` (a leaf); the task modules register themselves there on
import, and this module imports them so that `get_task("gsm8k-100")` works after `import diffmas.tasks`.
Constructing a task never downloads anything: data is fetched on the first `load()`.
"""

from __future__ import annotations

# Task families register themselves on import.
from diffmas.tasks import (  # noqa: F401
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
from diffmas.tasks.base import ANSWER_TYPES, FORMAT_INSTRUCTIONS, AnswerType, Item, Task
from diffmas.tasks.jsonl import JsonlTask
from diffmas.tasks.registry import (
    get_task,
    register_prefix,
    register_task,
    registered_prefixes,
    registered_tasks,
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
