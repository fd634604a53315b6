"""reasoning-gym answers: extract the final answer, then let the generator's own scorer judge it.

The scorer is the task's own (`GymTask.score_answer`) when the task is at hand, else the generator rebuilt from
what the item's `meta` records (generator, size, seed, config, split index): grading never imports the tasks.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from diffmas.grading.extract import answer_phrase, last_boxed, strip_thinking
from diffmas.items import Item

GYM_VERSION = "0.1.25"
_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.S)


def reasoning_gym() -> Any:
    """The `reasoning_gym` package, or an ImportError that says how to install the pinned version."""
    try:
        import reasoning_gym as rg
    except ImportError as e:
        raise ImportError(
            f"gym tasks need the reasoning-gym package: pip install reasoning-gym=={GYM_VERSION}"
        ) from e
    return rg


def gym_dataset(generator: str, size: int, seed: int, config: dict[str, Any]) -> Any:
    """A reasoning-gym dataset (it also scores answers); ValueError naming an unknown generator."""
    rg = reasoning_gym()
    if generator not in rg.factory.DATASETS:
        raise ValueError(f"unknown reasoning-gym generator {generator!r}")
    return rg.create_dataset(generator, size=size, seed=seed, **config)


@lru_cache(maxsize=32)
def _rebuilt(generator: str, size: int, seed: int, config_json: str) -> Any:
    """One dataset per generator setting, so grading many items rebuilds each dataset once."""
    return gym_dataset(generator, size, seed, json.loads(config_json))


def score_gym_item(answer: str | None, item: Item) -> float:
    """Score an answer for a gym item whose task object is not at hand: rebuild the generator from meta."""
    meta = item.meta
    config_json = json.dumps(meta.get("config", {}), sort_keys=True)
    dataset = _rebuilt(meta["generator"], meta["size"], meta["seed"], config_json)
    return float(dataset.score_answer(answer=answer, entry=dataset[meta["index"]]))


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


def gym_score(task: object, answer: str | None, item: Item) -> float:
    """The generator's score in [0, 1] (1 = correct): the task's own `score_answer` when it has one (a
    `GymTask` keeps its datasets), else the generator rebuilt from the item."""
    score_answer = getattr(task, "score_answer", None)
    if callable(score_answer):
        return float(score_answer(answer, item))
    return score_gym_item(answer, item)


__all__ = ["GYM_VERSION", "extract_gym_answer", "gym_dataset", "gym_score", "reasoning_gym", "score_gym_item"]
