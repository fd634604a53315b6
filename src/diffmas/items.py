"""What a question is: the `Item` every task yields and every grader reads, and the answer types.

A leaf module (no diffmas imports), so the graders (`diffmas.grading`) and the tasks (`diffmas.tasks`) both read
it without either importing the other; `diffmas.tasks.base` re-exports every name here.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AnswerType = Literal["math", "integer", "mcq", "yesno", "code", "text", "gym"]
ANSWER_TYPES: tuple[str, ...] = ("math", "integer", "mcq", "yesno", "code", "text", "gym")

# The largest item a file may hold, in bytes of its JSON line (question, views, choices and tests together). A
# question of megabytes is never a real item but a broken export, and evaluating it tokenises the whole text and
# builds attention over it (gigabytes) before the model-context warning could help; 1 MiB holds the largest code
# item with its tests of every shipped dataset with room to spare.
MAX_ITEM_BYTES = 1 << 20


@dataclass(frozen=True)
class Item:
    """One question. `answer` is the gold answer as a string; `tests` holds code tests for code tasks.

    `views` (optional) is private information per agent of the chain, by position (one entry per agent, the
    Solver last; "" for an agent that holds nothing). Each agent's prompt gets its own view through `{view}`;
    single-agent methods get every view (the full-information skyline). `question` is shared by everyone.
    """

    id: str
    question: str
    answer: str
    choices: tuple[str, ...] | None = None
    tests: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    views: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices) if self.choices is not None else None
        d["views"] = list(self.views) if self.views is not None else None
        return d

    @property
    def full_view(self) -> str:
        """Every agent's view, in chain order (what a single agent that sees everything reads)."""
        return "\n".join(v for v in self.views or () if v)


def views_of(items: Sequence[Item]) -> list[tuple[str, ...] | None] | None:
    """The items' per-agent views, for `Method.run(views=...)`; None when none of them has any (prompts then
    render exactly as for a task without views)."""
    return [it.views for it in items] if any(it.views is not None for it in items) else None


def option_letters(n: int) -> str:
    """The letters of `n` options, A first (how choices are rendered and how an answer letter is read)."""
    return string.ascii_uppercase[:n]


__all__ = ["ANSWER_TYPES", "MAX_ITEM_BYTES", "AnswerType", "Item", "option_letters", "views_of"]
