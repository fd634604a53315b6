"""Multiple-choice benchmarks by hub id or local file: GPQA-Diamond, ARC, OpenBookQA, CommonsenseQA, MedQA.

Every item has `choices` (the option texts, in the order shown to the model) and `answer` = the letter of
the correct option. GPQA ships the correct answer separately from three distractors, so its options are
shuffled with a seed derived from the item (same order on every machine and every run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffmas.tasks.base import Item, option_letters
from diffmas.tasks.hub import HubTask, as_list, field, stable_rng
from diffmas.tasks.registry import register_task


def _labelled_choices(row: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(labels, texts) from a `choices: {label: [...], text: [...]}` column (ARC, OpenBookQA, CSQA)."""
    choices = field(row, "choices")
    if isinstance(choices, Mapping):
        labels, texts = as_list(choices.get("label")), as_list(choices.get("text"))
    else:  # a list of {"label": .., "text": ..}
        labels = [c["label"] for c in choices]
        texts = [c["text"] for c in choices]
    if len(labels) != len(texts) or not texts:
        raise ValueError("choices need as many labels as texts")
    return [str(x).strip() for x in labels], [str(x).strip() for x in texts]


def _letter_for_key(key: str, labels: list[str]) -> str:
    key = str(key).strip()
    if key not in labels:
        raise ValueError(f"answer key {key!r} is not one of the labels {labels}")
    return option_letters(len(labels))[labels.index(key)]


class _LabelledMcq(HubTask):
    """Schema `question`, `choices.label/text`, `answerKey`; labels like `1..4` are shown as letters A..D."""

    answer_type = "mcq"
    question_field = "question"

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        labels, texts = _labelled_choices(row)
        key = field(row, "answerKey", default="")
        if not str(key).strip():
            raise ValueError(f"split {split!r} has no answer key (unlabelled); use another split")
        return Item(
            id=str(field(row, "id", default=f"{self.name}-{split}-{index}")),
            question=str(field(row, self.question_field)).strip(),
            answer=_letter_for_key(str(key), labels),
            choices=tuple(texts),
            meta={"labels": labels, "split": split, **self.extra_meta(row)},
        )

    def extra_meta(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {}


@register_task("arc-easy")
class ArcEasyTask(_LabelledMcq):
    name = "arc-easy"
    hub_id = "allenai/ai2_arc"
    hub_config = "ARC-Easy"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    sizes = {"train": 2251, "validation": 570, "test": 2376}


@register_task("arc-challenge")
class ArcChallengeTask(_LabelledMcq):
    name = "arc-challenge"
    hub_id = "allenai/ai2_arc"
    hub_config = "ARC-Challenge"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    sizes = {"train": 1119, "validation": 299, "test": 1172}


@register_task("openbookqa")
class OpenBookQaTask(_LabelledMcq):
    """OpenBookQA (`allenai/openbookqa`, config `main`): the question is in `question_stem`."""

    name = "openbookqa"
    hub_id = "allenai/openbookqa"
    hub_config = "main"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    sizes = {"train": 4957, "validation": 500, "test": 500}
    question_field = "question_stem"

    def extra_meta(self, row: Mapping[str, Any]) -> dict[str, Any]:
        fact = field(row, "fact1", default=None)
        return {"fact1": fact} if fact else {}


@register_task("commonsenseqa")
class CommonsenseQaTask(_LabelledMcq):
    """CommonsenseQA (`tau/commonsense_qa`): 5 options; the hub's test split has no labels, so the usual
    evaluation split is `validation`."""

    name = "commonsenseqa"
    hub_id = "tau/commonsense_qa"
    hub_splits = {"train": "train", "validation": "validation", "test": "test"}
    sizes = {"train": 9741, "validation": 1221, "test": 1140}

    def extra_meta(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"concept": field(row, "question_concept", default=None)}


@register_task("gpqa-diamond")
class GpqaDiamondTask(HubTask):
    """GPQA-Diamond (`Idavidrein/gpqa`, config `gpqa_diamond`, 198 questions): `Question`, `Correct Answer`,
    `Incorrect Answer 1..3`. Options are shuffled per item with a seed from (`seed`, record id)."""

    name = "gpqa-diamond"
    answer_type = "mcq"
    hub_id = "Idavidrein/gpqa"
    hub_config = "gpqa_diamond"
    hub_splits = {"test": "train"}  # the hub keeps the whole diamond set in `train`
    sizes = {"test": 198}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        record = str(field(row, "Record ID", "id", default=index))
        correct = str(field(row, "Correct Answer")).strip()
        wrong = [str(field(row, f"Incorrect Answer {i}")).strip() for i in (1, 2, 3)]
        options = [correct, *wrong]
        stable_rng("gpqa", self.seed, record).shuffle(options)
        return Item(
            id=f"gpqa-diamond-{record}",
            question=str(field(row, "Question")).strip(),
            answer=option_letters(4)[options.index(correct)],
            choices=tuple(options),
            meta={
                "domain": field(row, "High-level domain", default=None),
                "subdomain": field(row, "Subdomain", default=None),
                "shuffle_seed": self.seed,
            },
        )


@register_task("medqa")
class MedQaTask(HubTask):
    """MedQA-USMLE (`GBaker/MedQA-USMLE-4-options`): `question`, `options` ({"A": text, ...} or a list of
    {"key", "value"}), `answer_idx` (the letter) and `answer` (the text)."""

    name = "medqa"
    answer_type = "mcq"
    hub_id = "GBaker/MedQA-USMLE-4-options"
    hub_splits = {"train": "train", "test": "test"}
    sizes = {"train": 10178, "test": 1273}

    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        options = field(row, "options")
        if isinstance(options, Mapping):
            pairs = sorted((str(k).strip(), str(v).strip()) for k, v in options.items() if v is not None)
        else:
            pairs = sorted((str(o["key"]).strip(), str(o["value"]).strip()) for o in options)
        keys, texts = [k for k, _ in pairs], [t for _, t in pairs]
        key = field(row, "answer_idx", default=None)
        if key is None:
            answer_text = str(field(row, "answer")).strip()
            if answer_text not in texts:
                raise ValueError(f"answer {answer_text!r} is not one of the options")
            key = keys[texts.index(answer_text)]
        return Item(
            id=str(field(row, "id", default=f"medqa-{split}-{index}")),
            question=str(field(row, "question")).strip(),
            answer=_letter_for_key(str(key), keys),
            choices=tuple(texts),
            meta={"meta_info": field(row, "meta_info", default=None), "split": split},
        )


__all__ = [
    "ArcChallengeTask",
    "ArcEasyTask",
    "CommonsenseQaTask",
    "GpqaDiamondTask",
    "MedQaTask",
    "OpenBookQaTask",
]
