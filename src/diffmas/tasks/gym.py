"""reasoning-gym generators as tasks: `gym:<generator>`, seeded, graded by the generator's own scorer.

Needs the `reasoning-gym` package (pure Python, Apache-2.0; `pip install reasoning-gym==0.1.25`).
`train` and `test` are generated with different seeds (`seed` and `seed + 1`), so they are independent
draws; a small generator space can still repeat a question across them.
"""

from __future__ import annotations

import json
from typing import Any

from diffmas.grading.gym import GYM_VERSION, gym_dataset, reasoning_gym, score_gym_item
from diffmas.tasks.base import Item, Task
from diffmas.tasks.registry import register_prefix


def gym_generators() -> list[str]:
    """Names of every reasoning-gym generator (empty if the package is not installed)."""
    try:
        return sorted(reasoning_gym().factory.DATASETS)
    except ImportError:
        return []


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class GymTask(Task):
    """`size` items per split from one generator; extra keyword arguments go to the generator's config."""

    answer_type = "gym"

    def __init__(self, generator: str, size: int = 100, seed: int = 0, **config: Any):
        self.generator = generator
        self.name = f"gym:{generator}"
        self.source = f"reasoning-gym=={GYM_VERSION} (generated)"
        self.size = size
        self.seed = seed
        self.config = config
        self.sizes = {"train": size, "test": size}
        self._datasets: dict[int, Any] = {}
        self.seed_overrides: dict[str, int] = {}

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split_seed(self, split: str) -> int:
        if split in self.seed_overrides:
            return self.seed_overrides[split]
        return self.seed + (1 if split == "train" else 0)

    def dataset(self, split: str):
        """The reasoning-gym dataset object of a split (built once; it also scores answers)."""
        seed = self.split_seed(split)
        if seed not in self._datasets:
            self._datasets[seed] = gym_dataset(self.generator, self.size, seed, self.config)
        return self._datasets[seed]

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (have train, test)")
        ds = self.dataset(split)
        items = []
        for index in range(self.size):
            entry = ds[index]
            answer = entry.get("answer")
            items.append(
                Item(
                    id=f"gym-{self.generator}-{split}-{index}",
                    question=entry["question"],
                    answer="" if answer is None else str(answer),
                    meta={
                        "generator": self.generator,
                        "split": split,
                        "index": index,
                        "seed": self.split_seed(split),
                        "size": self.size,
                        "config": _json_safe(self.config),
                        "gym_metadata": _json_safe(entry.get("metadata", {})),
                    },
                )
            )
        return items

    def entry(self, item: Item) -> dict[str, Any]:
        """The original reasoning-gym entry of an item (its scorer may need the exact metadata objects)."""
        meta = item.meta
        return self.dataset(meta["split"])[meta["index"]]

    def score_answer(self, answer: str | None, item: Item) -> float:
        ds = self.dataset(item.meta["split"])
        return float(ds.score_answer(answer=answer, entry=self.entry(item)))


@register_prefix("gym")
def gym_task(generator: str, **kwargs: Any) -> GymTask:
    """`gym:<generator>` with optional size=, seed= and generator config keywords."""
    return GymTask(generator, **kwargs)


__all__ = ["GYM_VERSION", "GymTask", "gym_generators", "gym_task", "score_gym_item"]
