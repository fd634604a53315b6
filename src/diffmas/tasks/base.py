"""The task contract: every benchmark yields `Item`s and grades outputs through one `grade` function.

A task knows its answer type (which decides the answer-format instruction given to the Solver and the
grader used), its splits, and how to render an item as a question string.
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AnswerType = Literal["math", "integer", "mcq", "yesno", "code", "text", "gym"]
ANSWER_TYPES: tuple[str, ...] = ("math", "integer", "mcq", "yesno", "code", "text", "gym")

FORMAT_INSTRUCTIONS: dict[str, str] = {
    "math": "Reason step by step, then give the final answer in \\boxed{}.",
    "integer": "Reason step by step, then give the final answer as an integer in \\boxed{}.",
    "mcq": "Reason step by step, then give the letter of the correct option in \\boxed{}.",
    "yesno": "Reason step by step, then answer \\boxed{yes} or \\boxed{no}.",
    "code": "Write the complete Python function in a single ```python code block.",
    "text": "Reason step by step, then give the final answer in \\boxed{}.",
    "gym": "Reason step by step, then give the final answer in \\boxed{}.",
}

# The largest item a file may hold, in bytes of its JSON line (question, views, choices and tests together). A
# question of megabytes is never a real item but a broken export, and evaluating it tokenises the whole text and
# builds attention over it (gigabytes) before the model-context warning could help; 1 MiB holds the largest code
# item with its tests of every shipped dataset with room to spare.
MAX_ITEM_BYTES = 1 << 20

# Where an answer is complete although the model may go on (explanations after the code): decoding stops a sample
# there. A closed fenced block is all the code grader reads, so what follows it is never generated.
ANSWER_STOPS: dict[str, str] = {"code": r"```[^\n]*\n[\s\S]*?\n\s*```"}


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
    return string.ascii_uppercase[:n]


class Task(ABC):
    """A named benchmark. Subclasses implement `load`; grading and rendering have sensible defaults."""

    name: str = "task"
    answer_type: AnswerType = "math"
    source: str = ""
    # Split sizes known without loading anything (used by `diffmas tasks`); empty when unknown.
    sizes: dict[str, int] = {}

    @abstractmethod
    def load(self, split: str = "test") -> list[Item]:
        """Return the items of `split` (raise ValueError naming the split if it does not exist)."""

    def splits(self) -> tuple[str, ...]:
        return ("test",)

    @property
    def format_instruction(self) -> str:
        return FORMAT_INSTRUCTIONS[self.answer_type]

    @property
    def answer_stop(self) -> str | None:
        """A regex that ends an answer once it matches (None: stop tokens and the length cap only)."""
        return ANSWER_STOPS.get(self.answer_type)

    def render_question(self, item: Item) -> str:
        """The question as the agents see it: choices are listed with letters."""
        if not item.choices:
            return item.question
        lines = [item.question, ""]
        lines += [
            f"({letter}) {choice}" for letter, choice in zip(option_letters(len(item.choices)), item.choices)
        ]
        return "\n".join(lines)

    def chance_rate(self, items: list[Item]) -> float | None:
        """Expected accuracy of a uniform guess over the answer set (None when the set is open)."""
        if self.answer_type == "yesno":
            return 0.5
        if all(it.choices for it in items) and items:
            return sum(1 / len(it.choices) for it in items) / len(items)  # type: ignore[arg-type]
        options = [it.meta.get("options") for it in items]
        if items and all(isinstance(o, (list, tuple)) and o for o in options):
            return sum(1 / len(o) for o in options) / len(items)  # type: ignore[arg-type]
        return None

    def grade(self, output: str, item: Item):  # -> diffmas.grading.Grade
        from diffmas.grading import grade

        return grade(self, output, item)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, answer_type={self.answer_type!r})"
