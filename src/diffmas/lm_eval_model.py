"""A DiffMAS system as an lm-evaluation-harness model (`pip install diffmas[lm-eval]`), so that the harness's tasks
run through the multi-agent chain.

- `generate_until`: each request's context is the question the role chain answers (the upstream agents write into
  the shared trace, the Solver answers from it), cut at the task's `until` strings.
- `loglikelihood`: the Solver's log-probability of the continuation right after its prompt, read over the trace
  the upstream agents wrote (the trace it would answer from): the sum over the continuation's tokens, and whether
  every one of them is the likeliest. `loglikelihood_rolling` is that of the whole text after an empty question.

lm-eval finds models only in its own registry, so importing this module registers `diffmas`; the harness's command
line runs through `python -m diffmas.lm_eval_model` (lm-eval's own flags; `--model diffmas` is implied):

    python -m diffmas.lm_eval_model --model_args adapter=runs/train/adapter --tasks TASK --include_path DIR

Model arguments: `adapter` (a folder or hub id, see `System.from_pretrained`), or `model` + `method` (+ `roles`,
`latent_steps`, `realign`) for an untrained chain; `model` also replaces an adapter's base model; `dtype`,
`device`, `attn_implementation`, `batch_size`, `format_instruction` (appended by the role templates; default none,
lm-eval's prompts carry their own), `answer_type` (instead: the format instruction `diffmas eval` gives a task of
that answer type, e.g. `math`; lm-eval's `k=v,k=v` string cannot carry the instruction's own comma),
`max_new_tokens` (when a task gives no `max_gen_toks`).

The filter `diffmas_grade` (registered with the harness here too) grades each response with diffmas's own grader,
so that a task's `exact_match` is the accuracy `diffmas eval` reports on the same items (docs/lm_eval.md).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import lm_eval.models  # noqa: F401 - the harness fills its registry on first use only while it is empty
import torch
from lm_eval.api.filter import Filter
from lm_eval.api.model import LM
from lm_eval.api.registry import register_filter, register_model

from diffmas.system import System
from diffmas.tasks.base import ANSWER_TYPES, FORMAT_INSTRUCTIONS, AnswerType, Item

MODEL_NAME = "diffmas"
GEN_KWARGS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
)  # the harness's names that `System.generate` takes


@register_model(MODEL_NAME)
class DiffMASLM(LM):
    """`System.generate` and the Solver's log-probabilities behind lm-eval's request types."""

    def __init__(
        self,
        adapter: str | None = None,
        model: str | None = None,
        method: str | None = None,
        roles: str | None = None,
        latent_steps: int | None = None,
        realign: str | None = None,
        format_instruction: str = "",
        answer_type: str | None = None,
        batch_size: int | str | None = 1,
        device: str | None = None,
        dtype: str = "float32",
        attn_implementation: str | None = None,
        max_new_tokens: int | None = None,
        system: System | None = None,
        **harness: Any,  # the harness's own settings (max_batch_size, ...), not ours
    ) -> None:
        super().__init__()
        if system is None:
            system = _load_system(
                adapter,
                model,
                method,
                roles,
                latent_steps,
                realign,
                dtype,
                _device(device),
                attn_implementation,
            )
        self.system = system
        if answer_type is not None:
            if format_instruction:
                raise ValueError("give format_instruction or answer_type, not both")
            if answer_type not in FORMAT_INSTRUCTIONS:
                raise ValueError(
                    f"answer_type {answer_type!r}: choose one of {', '.join(FORMAT_INSTRUCTIONS)}"
                )
            format_instruction = FORMAT_INSTRUCTIONS[answer_type]
        self.format_instruction = format_instruction
        self.batch_size = _batch_size(batch_size)
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens is not None else None

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Answers, a batch at a time among requests with the same generation arguments, cut at `until`."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        for indices in groups.values():
            gen = dict(requests[indices[0]].args[1] or {})
            until = gen.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            budget = gen.get("max_gen_toks", self.max_new_tokens)
            kwargs = {k: gen[k] for k in GEN_KWARGS if gen.get(k) is not None}
            if budget is not None:
                kwargs["max_new_tokens"] = int(budget)
            if until:
                kwargs["stop_strings"] = until
            for batch in _chunks(indices, self.batch_size):
                contexts = [requests[i].args[0] for i in batch]
                texts = self.system.generate(contexts, self.format_instruction, **kwargs)
                for i, text in zip(batch, texts):
                    out[i] = cut_at(text, until)
        return [o if o is not None else "" for o in out]

    # ------------------------------------------------------------------ likelihoods
    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.loglikelihood_pairs([(str(r.args[0]), str(r.args[1])) for r in requests])

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        return [logprob for logprob, _ in self.loglikelihood_pairs([("", str(r.args[0])) for r in requests])]

    def loglikelihood_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for batch in _chunks(list(pairs), self.batch_size):
            out += self.score(batch)
        return out

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(log-probability of each continuation, whether it is the greedy one) for one batch of
        (context, continuation): the trace is built on the contexts as questions, then the Solver's prompt and the
        continuation are appended and the head read at the positions that predict the continuation's tokens."""
        from diffmas.methods import Method
        from diffmas.training.objective import target_hidden

        method = self.system.method
        if type(method).run is not Method.run:
            raise NotImplementedError(
                f"loglikelihood reads the Solver over the trace; method {method.name} answers in text first "
                "(its run differs): evaluate it on generate_until tasks"
            )
        tokenizer = self.system.backbone.tokenizer
        targets = [tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs]
        empty = [c for (_, c), t in zip(pairs, targets) if not t]
        if empty:
            raise ValueError(f"loglikelihood needs a continuation of at least one token, got {empty[0]!r}")
        contexts = [q for q, _ in pairs]
        fmt = self.format_instruction
        role = method.roles.solver.name
        with _config(method, max_new_tokens=max(len(t) for t in targets)), torch.no_grad():
            trace, _ = method.build_trace(contexts, fmt)
            prompts = method.encode(method.roles.solver, contexts, fmt)
            hidden = target_hidden(trace, role, prompts, targets, None)
            if trace.role_hook is not None:
                trace.role_hook(role)
            logprobs = torch.log_softmax(trace.logits(hidden).float(), dim=-1)
        labels = torch.tensor([t for target in targets for t in target], device=logprobs.device)
        picked = logprobs.gather(1, labels[:, None])[:, 0]
        greedy = logprobs.argmax(dim=-1) == labels
        out, start = [], 0
        for target in targets:
            end = start + len(target)
            out.append((float(picked[start:end].sum()), bool(greedy[start:end].all())))
            start = end
        return out


@register_filter("diffmas_grade")
class GradeFilter(Filter):
    """diffmas's grader on each response, so that lm-eval's `exact_match` against `doc_to_target: "{{answer}}"` is
    the accuracy `diffmas eval` reports: a response the grader accepts becomes the gold answer, any other the answer
    it extracted ("" when none); `--log_samples` keeps the raw response beside it.

    The grader is the one `diffmas eval` runs (`diffmas.grading.grade` on the text after any think block), with
    the item built from the doc's `question`, `answer`, `choices`, `tests` and other fields as a task file's row,
    and the answer type from the filter's `answer_type` argument, else the doc's `answer_type`, else `math`.
    """

    def __init__(self, answer_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if answer_type is not None and answer_type not in ANSWER_TYPES:
            raise ValueError(
                f"diffmas_grade: answer_type {answer_type!r}: choose one of {', '.join(ANSWER_TYPES)}"
            )
        if answer_type == "gym":
            raise ValueError(
                "diffmas_grade: gym answers need the reasoning-gym task's scorer; use diffmas eval"
            )
        self.answer_type = answer_type

    def apply(self, resps: Any, docs: list[dict]) -> list[list[str]]:
        return [[self.grade(str(r), doc) for r in responses] for responses, doc in zip(resps, docs)]

    def grade(self, response: str, doc: dict) -> str:
        from diffmas.data import ItemsTask
        from diffmas.thinking import answer_text

        kind = self.answer_type or doc.get("answer_type") or "math"
        if kind not in ANSWER_TYPES or kind == "gym":
            raise ValueError(f"diffmas_grade: a doc's answer_type {kind!r} is not one this filter grades")
        task = ItemsTask({}, cast(AnswerType, kind))
        item = doc_item(doc)
        verdict = task.grade(answer_text(response), item)
        return item.answer if verdict.correct else (verdict.extracted or "")


def doc_item(doc: dict) -> Item:
    """An lm-eval doc as the item `diffmas eval` reads from the same JSONL row."""
    fields = {"id", "question", "answer", "choices", "tests", "views"}
    choices, views = doc.get("choices"), doc.get("views")
    return Item(
        id=str(doc.get("id", "")),
        question=str(doc.get("question", "")),
        answer=str(doc["answer"]),
        choices=tuple(choices) if choices else None,
        tests=doc.get("tests"),
        views=tuple(views) if views else None,
        meta={k: v for k, v in doc.items() if k not in fields},
    )


def cut_at(text: str, until: Sequence[str]) -> str:
    """The text before the first of the stop strings (lm-eval's convention: the stop itself is not returned)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


@contextmanager
def _config(method: Any, **changes: Any) -> Iterator[None]:
    kept = method.config
    method.config = dataclasses.replace(kept, **changes)
    try:
        yield
    finally:
        method.config = kept


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _device(device: str | None) -> str:
    """The harness's device (its runner asks for cuda:0 when none is named, whatever the machine has): CUDA where
    it is available, else the CPU, with a warning when CUDA was asked for."""
    if device is None:
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        import warnings

        warnings.warn(f"device {device!r}: CUDA is not available here, running on the CPU", stacklevel=3)
        return "cpu"
    return device


def _batch_size(value: int | str | None) -> int:
    if value is None:
        return 1
    if isinstance(value, str) and not value.isdigit():
        raise ValueError(f"batch_size {value!r}: give a number of questions per batch (no 'auto' here)")
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return size


def _load_system(
    adapter: str | None,
    model: str | None,
    method: str | None,
    roles: str | None,
    latent_steps: int | None,
    realign: str | None,
    dtype: str,
    device: str,
    attn_implementation: str | None,
) -> System:
    """The system an adapter describes, or an untrained chain of `method` on `model` when no adapter is given.
    Values come from the harness's `k=v` string, so numbers may arrive as text."""
    steps = int(latent_steps) if latent_steps is not None else None
    if adapter:
        given: dict[str, Any] = {"method": method, "latent_steps": steps, "realign": realign}
        return System.from_pretrained(
            adapter,
            model=model,
            dtype=dtype,
            device=device,
            attn_implementation=attn_implementation,
            **{k: v for k, v in given.items() if v is not None},
        )
    from diffmas.backbones import load_backbone
    from diffmas.configs import ModelSpec
    from diffmas.methods import MethodConfig, get_method
    from diffmas.roles import RoleChain

    spec = ModelSpec.model_validate(
        {
            "name": model or "smollm2-135m",
            "dtype": dtype,
            "device": device,
            "attn_implementation": attn_implementation,
        }
    )
    backbone = load_backbone(spec.name, **spec.load_kwargs())
    given = {"latent_steps": steps, "realign": realign}
    config = MethodConfig(**{k: v for k, v in given.items() if v is not None})  # unset: the defaults
    answerer = get_method(method or "latent_mas", backbone, RoleChain.load(roles), config)
    return System(backbone, answerer, {"base_model": spec.name})


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line with the `diffmas` model registered (`--model diffmas` unless another is named)."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--model" not in args and not any(a.startswith("--model=") for a in args):
        at = 1 if args[:1] == ["run"] else 0
        args = [*args[:at], "--model", MODEL_NAME, *args[at:]]
    sys.argv = [sys.argv[0], *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
