"""One grader for every method: `grade(task, output, item) -> Grade`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffmas.tasks.base import Item, Task


@dataclass(frozen=True)
class Grade:
    """The verdict on one output: the extracted answer, whether it is correct, and why not."""

    correct: bool
    extracted: str | None
    reason: str = ""


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _normalize(s: str) -> str:
    return re.sub(r"\s+", "", s).replace(",", "").rstrip(".").lower()


def grade(task: Task, output: str, item: Item) -> Grade:
    extracted = _last_boxed(output)
    if extracted is None:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", output)
        extracted = nums[-1] if nums else None
    if extracted is None:
        return Grade(False, None, "no answer found")
    ok = _normalize(extracted) == _normalize(item.answer)
    return Grade(ok, extracted, "" if ok else "wrong")


__all__ = ["Grade", "grade"]
