"""The task contract: every benchmark yields `Item`s and grades outputs through one `grade` function.

A task knows its answer type (which decides the answer-format instruction given to the Solver and the
grader used), its splits, and how to render an item as a question string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from diffmas.grading import Grade, grade
from diffmas.items import ANSWER_TYPES, MAX_ITEM_BYTES, AnswerType, Item, option_letters, views_of

FORMAT_INSTRUCTIONS: dict[str, str] = {
    "math": "Reason step by step, then give the final answer in \\boxed{}.",
    "integer": "Reason step by step, then give the final answer as an integer in \\boxed{}.",
    "mcq": "Reason step by step, then give the letter of the correct option in \\boxed{}.",
    "yesno": "Reason step by step, then answer \\boxed{yes} or \\boxed{no}.",
    "code": "Write the complete Python function in a single ```python code block.",
    "text": "Reason step by step, then give the final answer in \\boxed{}.",
    "gym": "Reason step by step, then give the final answer in \\boxed{}.",
}

# Where an answer is complete although the model may go on (explanations after the code): decoding stops a sample
# there. A closed fenced block is all the code grader reads, so what follows it is never generated.
ANSWER_STOPS: dict[str, str] = {"code": r"```[^\n]*\n[\s\S]*?\n\s*```"}


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
        choices = [len(it.choices) for it in items if it.choices]
        if items and len(choices) == len(items):
            return sum(1 / n for n in choices) / len(items)
        options = [it.meta.get("options") for it in items]
        sizes = [len(o) for o in options if isinstance(o, (list, tuple)) and o]
        if items and len(sizes) == len(items):
            return sum(1 / n for n in sizes) / len(items)
        return None

    def grade(self, output: str, item: Item) -> Grade:
        """Grade `output` through `diffmas.grading` (which reads the task only through its `answer_type`)."""
        return grade(self, output, item)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, answer_type={self.answer_type!r})"


__all__ = [
    "ANSWER_STOPS",
    "ANSWER_TYPES",
    "FORMAT_INSTRUCTIONS",
    "MAX_ITEM_BYTES",
    "AnswerType",
    "Item",
    "Task",
    "option_letters",
    "views_of",
]
