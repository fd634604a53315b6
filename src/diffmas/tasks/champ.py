"""CHAMP competition math (270 problems) from the PyPI package `champ-dataset==1.0.0` (MIT).

Answers are short but free-form ("239", "No", "2^(n-1)", "x=±1, ±2, ±1/2", "No positive integer
solutions"); the CHAMP authors judged them with a model. We grade with the math grader (math-verify), and
yes/no answers with the yes/no grader; `meta["answer_kind"]` says which, and `"free"` marks answers that no
automatic grader can check reliably (report accuracy on the checkable subset alongside the full one).
"""

from __future__ import annotations

import json
import re

from diffmas.tasks.base import Item, Task
from diffmas.tasks.pypi import package_file
from diffmas.tasks.registry import register_task

PACKAGE, VERSION, MEMBER = "champ-dataset", "1.0.0", "champ_dataset/dataset_files/v0.json"

_YESNO = re.compile(r"^(yes|no)\b", re.I)
_SIMPLE_MATH = re.compile(r"^[-+\d\s.,/^*()=a-z_{}\\±√]+$", re.I)


def answer_kind(answer: str) -> str:
    """`yesno`, `math` (a formula or number math-verify can parse) or `free` (prose)."""
    text = answer.strip()
    if _YESNO.match(text) and len(text.split()) <= 2:
        return "yesno"
    words = re.findall(r"[A-Za-z]{3,}", text)
    if _SIMPLE_MATH.match(text) and not [
        w for w in words if w.lower() not in {"sqrt", "sum", "frac", "cdot"}
    ]:
        return "math"
    return "free"


@register_task("champ")
class ChampTask(Task):
    """CHAMP: 270 problems in 5 categories; one `test` split (the source has no train split)."""

    name = "champ"
    answer_type = "math"
    source = f"PyPI {PACKAGE}=={VERSION}"
    sizes = {"test": 270}

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (only 'test')")
        data = json.loads(package_file(PACKAGE, VERSION, MEMBER).read_text(encoding="utf-8"))
        items = []
        for pid, problem in data["problems"].items():
            answer = str(problem["_answer"]).strip()
            steps = problem.get("solution", {}).get("steps", [])
            items.append(
                Item(
                    id=f"champ-{pid}",
                    question=problem["_text"].strip(),
                    answer=answer,
                    meta={
                        "category": problem.get("category"),
                        "answer_kind": answer_kind(answer),
                        "solution": "\n".join(s.get("_text", "") for s in steps),
                    },
                )
            )
        return items


__all__ = ["ChampTask", "answer_kind"]
