"""reasoning-gym answers: extract the final answer, then let the generator's own scorer judge it."""

from __future__ import annotations

import re

from diffmas.grading.extract import answer_phrase, last_boxed, strip_thinking
from diffmas.tasks.base import Item, Task

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.S)


def extract_gym_answer(output: str) -> str | None:
    """`\\boxed{...}`, else reasoning-gym's own `<answer>...</answer>` tag, else an "answer is" phrase, else
    the last non-empty line."""
    text = strip_thinking(output)
    boxed = last_boxed(text)
    if boxed is not None:
        return re.sub(r"^\\text\s*\{(.*)\}$", r"\1", boxed.strip(), flags=re.S)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    phrase = answer_phrase(text)
    if phrase is not None:
        return phrase
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def gym_score(task: Task, answer: str | None, item: Item) -> float:
    """The generator's score in [0, 1] (1 = correct)."""
    from diffmas.tasks.gym import GymTask, score_gym_item

    if isinstance(task, GymTask):
        return task.score_answer(answer, item)
    return score_gym_item(answer, item)


__all__ = ["extract_gym_answer", "gym_score"]
