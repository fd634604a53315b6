"""Math benchmarks of the paper by hub id or local file: GSM8K, MATH-500, AIME 2024, AIME 2025."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffmas.tasks.base import Item
from diffmas.tasks.gsm_symbolic import final_answer
from diffmas.tasks.hub import HubTask, field
from diffmas.tasks.registry import register_task


@register_task("gsm8k")
class Gsm8kTask(HubTask):
    """GSM8K (`openai/gsm8k`, config `main`): the gold answer is the number after `####`."""

    name = "gsm8k"
    answer_type = "math"
    hub_id = "openai/gsm8k"
    hub_config = "main"
    hub_splits = {"train": "train", "test": "test"}
    sizes = {"train": 7473, "test": 1319}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        solution = str(field(row, "answer"))
        return Item(
            id=str(field(row, "id", default=f"gsm8k-{split}-{index}")),
            question=str(field(row, "question")).strip(),
            answer=final_answer(solution),
            meta={"solution": solution, "split": split, "index": index},
        )


@register_task("math500")
class Math500Task(HubTask):
    """MATH-500 (`HuggingFaceH4/MATH-500`): `problem`, `answer` (LaTeX), `subject`, `level`, `unique_id`."""

    name = "math500"
    answer_type = "math"
    hub_id = "HuggingFaceH4/MATH-500"
    hub_splits = {"test": "test"}
    sizes = {"test": 500}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        return Item(
            id=str(field(row, "unique_id", "id", default=f"math500-{index}")),
            question=str(field(row, "problem")).strip(),
            answer=str(field(row, "answer")).strip(),
            meta={
                "solution": field(row, "solution", default=None),
                "subject": field(row, "subject", default=None),
                "level": field(row, "level", default=None),
            },
        )


class _AimeTask(HubTask):
    """AIME: `problem`/`Problem` and an integer `answer`/`Answer` in 0..999 (leading zeros dropped)."""

    answer_type = "integer"
    sizes = {"test": 30}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        raw = str(field(row, "answer")).strip()
        try:
            answer = str(int(raw))
        except ValueError as e:
            raise ValueError(f"AIME answer {raw!r} is not an integer") from e
        return Item(
            id=f"{self.name}-{field(row, 'id', 'ID', default=index)}",
            question=str(field(row, "problem", "question")).strip(),
            answer=answer,
            meta={"solution": field(row, "solution", default=None), "url": field(row, "url", default=None)},
        )


@register_task("aime24")
class Aime24Task(_AimeTask):
    name = "aime24"
    hub_id = "HuggingFaceH4/aime_2024"
    hub_splits = {"test": "train"}  # the hub dataset keeps its 30 problems in `train`


@register_task("aime25")
class Aime25Task(_AimeTask):
    name = "aime25"
    hub_id = "math-ai/aime25"
    hub_splits = {"test": "test"}


__all__ = ["Aime24Task", "Aime25Task", "Gsm8kTask", "Math500Task"]
