"""`diffmas eval`: run one method on one task and keep a record of every item.

Rows are appended to `samples.jsonl` batch by batch (each row one write, fsynced; see `diffmas.records`), so an
interrupted run loses nothing and a rerun with the same config continues where it stopped, after moving a torn last
row aside. The output directory is locked for the run, so two evaluations cannot write into one. `summary.json` is
written atomically at the end and counts each item id once.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from diffmas.adapters import (  # noqa: F401  (resolve_adapter_settings: re-exported, its old import path)
    ADAPTER_DEFAULTS,
    DONOR_METHODS,
    check_adapter_settings,
    resolve_adapter_settings,
    trained_method,
    trained_settings,
)
from diffmas.configs import HOW_NOT_WHAT, BatchSize, InferenceSpec, ModelFields
from diffmas.methods import METHODS, MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.tasks.base import Item, views_of
from diffmas.thinking import answer_text

SAMPLE_TEMPERATURE = 0.6  # the paper's sampling temperature for repeated samples when decoding is greedy


class EvalConfig(ModelFields, InferenceSpec):
    """Everything that decides an evaluation's results; saved into `summary.json`. The backbone's fields are
    `diffmas.configs.ModelFields`, the method's and decoding's `diffmas.configs.InferenceSpec` (shared with a
    comparison's `inference:` section, defaults included)."""

    method: str = "latent_mas"
    task: str
    task_args: dict[str, Any] = Field(
        default_factory=dict
    )  # keyword arguments of the task (e.g. variants, seed)
    split: str = "test"
    limit: int | None = Field(default=None, ge=1)
    # questions per batch, or "auto": the largest batch whose KV caches fit `kv_budget_gib` (on CUDA, unset: 60%
    # of the memory free at the start); the batch does not change results (batched equals one at a time)
    batch_size: BatchSize = 4
    kv_budget_gib: float | None = Field(default=None, gt=0)
    # answer the longest questions first, so a batch holds questions of like length (`longest_first`)
    group_by_length: bool = True
    seed: int = 0
    adapter: str | None = None
    roles: str | None = None
    out: str = "runs/eval"

    @model_validator(mode="after")
    def _auto_batch_needs_a_budget(self) -> EvalConfig:
        if self.batch_size == "auto" and self.kv_budget_gib is None and self.device == "cpu":
            raise ValueError(
                "batch_size 'auto' on device cpu needs kv_budget_gib (the KV-cache memory to fill, in GiB): "
                "host memory is shared, so there is no free-memory probe to size it by"
            )
        return self

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}: choose one of {sorted(METHODS)}")
        return v

    def method_config(self, temperature: float | None = None, answer_stop: str | None = None) -> MethodConfig:
        """The runtime config: this config's fields (`MethodConfig.from_spec`), with a temperature for the
        repeated samples and the task's answer stop."""
        sampled = {} if temperature is None else {"temperature": temperature}
        return MethodConfig.from_spec(self, answer_stop=answer_stop, **sampled)

    def results_key(self) -> dict[str, Any]:
        """The fields whose change invalidates rows already written."""
        key = self.model_dump(exclude=_NOT_IN_KEY)
        if self.temperature > 0 or self.samples > 1:  # sampled answers depend on how they are computed:
            if self.static_cache or self.compile:  # they part from the dynamic loop's once a row finishes
                key["sampled_on_static_cache"] = True
            if self.group_by_length:  # the random stream is drawn batch by batch
                key["sampled_longest_first"] = True
        # a field added after the key was introduced is left out at its default, so run directories written before
        # it still resume (a new knob needs no entry here)
        for name in set(key) - _FIRST_KEY_FIELDS:
            field = type(self).model_fields.get(name)
            if field is not None and key[name] == field.get_default(call_default_factory=True):
                del key[name]
        return key


# how answers are computed or where they go, not what they are
_NOT_IN_KEY = {
    "limit",
    "batch_size",
    "kv_budget_gib",
    "out",
    "device",
    "attn_implementation",
    "group_by_length",
}
_NOT_IN_KEY |= HOW_NOT_WHAT
# the results key's fields when it was introduced: always in it (later ones only when not at their default)
_FIRST_KEY_FIELDS = frozenset(
    {"model", "dtype", "latent_steps", "realign", "upstream_max_new_tokens", "max_new_tokens", "temperature",
     "top_p", "samples", "method", "task", "task_args", "split", "seed", "adapter", "roles"}
)  # fmt: skip


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_key(out: Path, cfg: EvalConfig) -> None:
    """Refuse to mix rows from different configs in one directory (rather than silently overwrite them)."""
    key_path = out / "eval_config.json"
    key = cfg.results_key()
    if key_path.exists():
        old = json.loads(key_path.read_text(encoding="utf-8"))
        if old != key:
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            hint = ""
            if any(k.startswith("sampled_") for k in diff):
                hint = (
                    " (sampled answers depend on the decode loop and the batch order: resume with the "
                    "static_cache/compile and group_by_length the directory was written with)"
                )
            raise ValueError(
                f"{out} holds results of a different evaluation (differs in: {', '.join(diff)}){hint}; "
                "choose another --out directory"
            )


def _write_key(out: Path, cfg: EvalConfig) -> None:
    """Claim the directory for this config. Called with the first rows, not before: a run that fails while it
    sets up (an unknown task, a missing model) leaves nothing that refuses the corrected command."""
    key_path = out / "eval_config.json"
    if not key_path.exists():
        _atomic_write_json(key_path, cfg.results_key())


class ContextLengthWarning(UserWarning):
    """A question is longer than the model's context length (`max_position_embeddings`)."""


def warn_long_questions(backbone, task, items) -> None:
    """Warn about questions whose tokens alone exceed the model's context length: the model was never trained on
    positions that far, so its answers there say nothing about the method. Tokens never outnumber UTF-8 bytes, so
    only questions with more bytes than the limit are tokenised."""
    limit = getattr(backbone.model.config, "max_position_embeddings", None)
    if not limit:
        return
    too_long = []
    for it in items:
        question = task.render_question(it)
        if len(question.encode("utf-8")) <= limit:
            continue
        n = len(backbone.tokenizer(question, add_special_tokens=False)["input_ids"])
        if n > limit:
            too_long.append(f"{it.id} ({n:,} tokens)")
    if too_long:
        shown = ", ".join(too_long[:5]) + (", ..." if len(too_long) > 5 else "")
        warnings.warn(
            f"{len(too_long)} question(s) exceed {backbone.name}'s context length of {limit:,} tokens "
            f"(max_position_embeddings): {shown}; they are evaluated, but past positions the model never saw",
            ContextLengthWarning,
            stacklevel=2,
        )


def check_unique_ids(items, source: str) -> None:
    """Refuse a split whose item ids repeat: resumption and every summary key on the id."""
    from collections import Counter

    repeated = sorted(i for i, n in Counter(it.id for it in items).items() if n > 1)
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise ValueError(f"{source}: item ids must be unique, repeated: {shown}")


def run_eval(
    cfg: EvalConfig, *, backbone=None, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Evaluate and return the summary. `backbone` may be passed in to reuse a loaded model.

    The output directory is locked for the whole run: a second evaluation on it fails instead of evaluating every
    item again into the same file."""
    from diffmas.records import locked_dir, prepare_dir

    out = prepare_dir(Path(cfg.out), "eval output directory (--out)")
    with locked_dir(out, "eval output directory (--out)"), contextlib.ExitStack() as stack:
        return _run_eval_locked(cfg, out, backbone, progress, stack)


def _run_eval_locked(
    cfg: EvalConfig,
    out: Path,
    backbone,
    progress: Callable[[int, int], None] | None,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """`stack` holds the adapter on the backbone's own model until the evaluation ends (then it comes off)."""
    from diffmas.adapters import adapter_attached
    from diffmas.metrics import summarize
    from diffmas.records import append_jsonl, reorder_jsonl, repair_jsonl, unique_by_id
    from diffmas.tasks import get_task

    _check_key(out, cfg)
    task = get_task(cfg.task, **cfg.task_args)
    split_items = task.load(cfg.split)
    check_unique_ids(split_items, f"task {cfg.task} (split {cfg.split})")
    items = split_items[: cfg.limit] if cfg.limit else split_items
    if task.answer_type == "code":  # refuse before the model loads, not at the first graded answer
        from diffmas.grading.sandbox import WEAK_WARNING, SandboxConfig, check_isolation

        if check_isolation(SandboxConfig()) == "weak":  # said once up front; every record says it too
            warnings.warn(WEAK_WARNING, UserWarning, stacklevel=2)
    roles = RoleChain.load(cfg.roles)
    if backbone is None:
        from diffmas.backbones import load_backbone

        backbone = load_backbone(cfg.model, **cfg.model_spec().load_kwargs())
    realigner, role_hook = None, None
    label = cfg.method  # what the records call the method: the trained one when an adapter says so
    if cfg.adapter:
        asked = {key: getattr(cfg, key) for key in ADAPTER_DEFAULTS}
        check_adapter_settings(cfg.adapter, trained_settings(cfg.adapter), asked)
        backbone, realigner, role_hook = stack.enter_context(adapter_attached(backbone, cfg.adapter))
        label = trained_method(cfg.adapter) or cfg.method
    kwargs = dict(realigner=realigner, role_hook=role_hook)
    method = get_method(
        cfg.method, backbone, roles, cfg.method_config(answer_stop=task.answer_stop), **kwargs
    )
    sampler = None
    if cfg.samples > 1:
        temperature = cfg.temperature or SAMPLE_TEMPERATURE
        sampler = get_method(
            cfg.method, backbone, roles, cfg.method_config(temperature, task.answer_stop), **kwargs
        )

    # over the whole split, so that `limit` (not part of the results key) cannot change an item's donor
    donor_of = _donor_map(split_items, cfg.seed) if cfg.method in DONOR_METHODS else None
    samples_path = out / "samples.jsonl"
    rows = unique_by_id(repair_jsonl(samples_path), samples_path)
    done = {str(r["id"]) for r in rows}
    todo = [it for it in items if it.id not in done]
    warn_long_questions(backbone, task, todo)
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=backbone.device).manual_seed(cfg.seed)
    if progress:
        progress(len(items) - len(todo), len(items))
    # sized by the longest prompts, the donors' included (the donor control's upstream agents read those)
    sized = todo + [donor_of[it.id] for it in todo] if donor_of is not None else todo
    batch_size = resolve_batch_size(cfg, method, task, sized, limit=len(todo))
    done_before = len(items) - len(todo)
    if cfg.group_by_length and batch_size > 1:
        todo = longest_first(todo, task, backbone.tokenizer, donor_of)
    for batch in batches_of(todo, batch_size):
        new_rows = _eval_batch(cfg, task, batch, method, sampler, generator, donor_of, label)
        _write_key(out, cfg)
        append_jsonl(samples_path, new_rows)  # each row one write, then fsync: a kill leaves only a torn tail
        rows += new_rows
        if progress:
            done_before += len(batch)
            progress(done_before, len(items))
    if cfg.compile == "reduce-overhead":  # the store kept for CUDA graphs goes with the evaluation
        from diffmas.trace import release_static_buffers

        release_static_buffers(backbone.model)
    # in the split's order again (an earlier, killed call may have grouped rows too)
    if samples_path.exists():
        position = {it.id: i for i, it in enumerate(split_items)}
        reorder_jsonl(samples_path, lambda r: position.get(str(r["id"]), len(position)))
    wanted = {it.id for it in items}
    rows = [r for r in rows if str(r["id"]) in wanted]  # unique by id (above), so n counts items, not rows
    graded = {str(r["id"]) for r in rows}
    summary = {
        "method": label,
        "decoded_by": cfg.method,
        "task": task.name,
        "model": cfg.model,
        "n": len(rows),
        "batch_size": batch_size,  # the one used (what "auto" chose)
        **summarize(rows),
        **_reference_rates(task, [it for it in items if it.id in graded]),
        "wall_seconds_this_call": round(time.perf_counter() - started, 3),
        "config": cfg.model_dump(),
    }
    _atomic_write_json(out / "summary.json", summary)
    return summary


def resolve_batch_size(cfg: EvalConfig, method, task, items, limit: int | None = None) -> int:
    """`cfg.batch_size`, or for "auto" the largest batch (at most `limit`, default len(items)) whose KV caches fit
    the budget: every trace sized by the method's longest over `items` (`Method.trace_columns`), at the model's
    dtype."""
    if cfg.batch_size != "auto":
        return cfg.batch_size
    limit = len(items) if limit is None else limit
    if not items or limit < 1:
        return 1
    from diffmas.memory import auto_batch_size, kv_budget

    model = method.backbone.model
    if cfg.kv_budget_gib is not None:
        budget = int(cfg.kv_budget_gib * 2**30)
    else:
        try:
            budget = kv_budget(method.backbone.device)
        except ValueError as e:
            raise ValueError(f"batch_size 'auto': {e} (set kv_budget_gib)") from None
    columns = method.trace_columns(
        [task.render_question(it) for it in items], task.format_instruction, views_of(items)
    )
    if cfg.compile == "reduce-overhead":  # CUDA graphs: one answer's store is kept between answers
        columns *= 2
    columns *= method.rows_per_question  # a batch of n questions is a trace of n x rows_per_question rows
    dtype = next(model.parameters()).dtype
    try:
        return auto_batch_size(model.config, columns, budget, dtype=dtype, limit=limit)
    except ValueError as e:
        given = cfg.kv_budget_gib if cfg.kv_budget_gib is not None else f"{budget / 2**30:.3g} (60% free)"
        raise ValueError(f"batch_size 'auto' with kv_budget_gib {given}: {e}") from None


def longest_first(items: list[Item], task, tokenizer, donor_of: dict[str, Item] | None = None) -> list[Item]:
    """`items` by decreasing tokens of their question and views (plus their donor's, whose prompts a donor
    trace's upstream agents read); ties keep their order.

    A batch pads every segment of its trace to its longest row, and pads cost a whole forward each: on the embedded
    tasks at batch 16, batches in split order process 1.38x-1.63x the real prompt columns, batches of like length
    1.08x-1.13x (docs/performance.md). Longest first also makes the first batch the largest, so a batch size that
    does not fit fails at once, not hours in. Greedy answers do not change (batched equals one at a time; sampled
    ones draw their random stream batch by batch, so for them the switch is part of the results key). `run_eval`
    puts samples.jsonl back in the split's order when the run ends (until then, rows are in answer order, and every
    reader matches them by id)."""

    def text(it: Item) -> str:
        return "\n".join([task.render_question(it), *(it.views or ())])

    texts = [text(it) for it in items]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    if donor_of is not None:
        donors = [text(donor_of[it.id]) for it in items]
        extra = tokenizer(donors, add_special_tokens=False)["input_ids"] if donors else []
        lengths = [n + len(ids) for n, ids in zip(lengths, extra)]
    order = sorted(range(len(items)), key=lambda i: -lengths[i])  # sorted is stable
    return [items[i] for i in order]


def batches_of(items: list[Item], batch_size: int, rank: int = 0, world: int = 1) -> list[list[Item]]:
    """The batches of `batch_size` consecutive items that process `rank` of `world` answers: every world-th, so
    the batches (and so each item's results) are the same at any number of processes."""
    batches = [items[b : b + batch_size] for b in range(0, len(items), batch_size)]
    return batches[rank::world]


def run_batch(method, task, batch: list[Item], generator=None, **run_kwargs) -> list[Any]:
    """`method`'s outputs for one batch of items, without gradients."""
    with torch.no_grad():
        return method.run(
            [task.render_question(it) for it in batch],
            task.format_instruction,
            generator,
            views=views_of(batch),
            **run_kwargs,
        )


def grade_outputs(task, batch: list[Item], outputs) -> list[Any]:
    """Each output graded on its answer after any think block (drafts in a think block are not answers)."""
    return [task.grade(answer_text(o.text), it) for it, o in zip(batch, outputs)]


def answer_batch(method, task, batch: list[Item], **run_kwargs) -> tuple[list[Any], list[Any]]:
    """`method`'s outputs for one batch and their grades (`run_batch`, then `grade_outputs`)."""
    outputs = run_batch(method, task, batch, **run_kwargs)
    return outputs, grade_outputs(task, batch, outputs)


def answer_items(
    method, task, items: list[Item], batch_size: int, rank: int = 0, world: int = 1
) -> list[bool]:
    """Whether each item this process answers is answered correctly, in the order of `items`: the accuracy loop of
    `diffmas eval` without its records, batched as it batches (`batches_of` over `longest_first`), for a caller
    that only needs the grades."""
    order = longest_first(items, task, method.backbone.tokenizer) if batch_size > 1 else items
    position = {id(it): i for i, it in enumerate(items)}
    graded = [
        (position[id(it)], bool(g.correct))
        for batch in batches_of(order, batch_size, rank, world)
        for it, g in zip(batch, answer_batch(method, task, batch)[1])
    ]
    return [correct for _, correct in sorted(graded)]


def _eval_batch(cfg: EvalConfig, task, batch, method, sampler, generator, donor_of, label: str) -> list[dict]:
    """Run and grade one batch; the records of its items."""
    views = views_of(batch)
    t0 = time.perf_counter()
    extra = {}
    if donor_of is not None:  # the donor control: each item reads the trace of its donor item
        donor_items = [donor_of[it.id] for it in batch]
        extra["donors"] = (
            [task.render_question(d) for d in donor_items],
            [d.views for d in donor_items] if views is not None else None,
        )
    outputs = run_batch(method, task, batch, **extra)
    sampled = (
        [run_batch(sampler, task, batch, generator, **extra) for _ in range(cfg.samples)] if sampler else []
    )
    seconds = (time.perf_counter() - t0) / len(
        batch
    )  # answering only: grading (a sandbox for code) is not timed
    grades = grade_outputs(task, batch, outputs)
    sample_grades = [grade_outputs(task, batch, s) for s in sampled]
    rows = []
    for i, (item, output, grade) in enumerate(zip(batch, outputs, grades)):
        row = {
            "id": item.id,
            "method": label,
            "decoded_by": cfg.method,
            "question": item.question,
            "output": output.text,
            "extracted": grade.extracted,
            "gold": item.answer,
            "correct": bool(grade.correct),
            "reason": grade.reason,
            "generated_tokens": output.generated_tokens,
            "answer_tokens": len(output.answer.token_ids),
            "trace_len": output.trace_len,
            "seconds": round(seconds, 4),
            "logprobs": [round(x, 5) for x in output.answer.logprobs],
            "entropies": [round(x, 5) for x in output.answer.entropies],
            "messages": [_message_record(m) for m in output.messages],
        }
        if sampled:
            row["sample_answers"] = [g[i].extracted for g in sample_grades]
            row["sample_correct"] = [bool(g[i].correct) for g in sample_grades]
        rows.append(row)
    return rows


def _donor_map(items, seed: int) -> dict:
    """Each item's donor: a derangement of the whole split, seeded by the seed and the item ids."""
    from diffmas.methods import derangement

    order = derangement(len(items), f"{seed}\x1f" + "\x1f".join(it.id for it in items))
    return {it.id: items[j] for it, j in zip(items, order)}


def _reference_rates(task, items) -> dict[str, float]:
    """The rates an accuracy must be read against: a uniform guess (when the answer set is closed) and always
    answering the most common gold answer."""
    from collections import Counter

    rates: dict[str, float] = {}
    if not items:
        return rates
    chance = task.chance_rate(items)
    if chance is not None:
        rates["chance_rate"] = chance
    golds = Counter(it.answer.strip().lower() for it in items)
    rates["majority_rate"] = golds.most_common(1)[0][1] / len(items)
    rates["majority_answer"] = golds.most_common(1)[0][0]
    return rates


def _message_record(message) -> dict[str, Any]:
    from dataclasses import asdict

    return {"type": type(message).__name__, **asdict(message)}
