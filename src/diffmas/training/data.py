"""The training data of a run: the items, their targets of the three kinds (the task's reference answer, the
untrained method's own graded-correct samples, or a JSONL file), the upstream text a text-SFT run conditions on,
and the seeded order in which micro-batches are drawn and sharded across processes. Generation is shared across
processes by chunks (`my_chunks`) and its rows cached in the run directory, so a resume reuses them."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffmas.records import decode_lines
from diffmas.roles import format_context
from diffmas.tasks import Task
from diffmas.tasks.base import Item, views_of
from diffmas.thinking import answer_text, thinks
from diffmas.training.objective import Batch, encode_target, reference_target

CHUNK = 8  # items per generation chunk: the unit of sharding and of the per-chunk sampling seed


@dataclass(frozen=True)
class Shard:
    """Which process this is of how many, and the two collective calls the data needs (`accelerate`'s)."""

    rank: int
    world: int
    is_main: bool
    wait: Callable[[], None]


def shard_of(accelerator) -> Shard:
    return Shard(
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.is_main_process,
        accelerator.wait_for_everyone,
    )


def my_chunks(items: list[Item], shard: Shard, size: int = CHUNK) -> list[tuple[int, list[Item]]]:
    """(index, chunk) of the chunks of `size` items this rank works on: the evaluation runner's `batches_of`
    (every world-th, so the chunks, and so the rows, are the same at any world size), with each chunk's index in
    the whole split (it seeds the chunk's sampler)."""
    from diffmas.evaluation import batches_of

    return list(
        zip(itertools.count(shard.rank, shard.world), batches_of(items, size, shard.rank, shard.world))
    )


def gather(rows: list[Any], world: int) -> list[Any]:
    """Every rank's rows, on every rank (a no-op for one process)."""
    if world == 1:
        return rows
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


def cached_jsonl(
    path: Path, items: list[Item], shard: Shard, make: Callable[[], list[dict]]
) -> dict[str, Any]:
    """A per-item cache file, made once and reused on resume. `make` returns this rank's rows (of its
    `my_chunks`); the main process writes them all, in item order."""
    if not path.exists():
        rows = gather(make(), shard.world)
        order = {it.id: k for k, it in enumerate(items)}
        rows.sort(key=lambda r: order[r["id"]])
    if not path.exists() and shard.is_main:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
    shard.wait()
    return {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def text_contexts(text_mas, task: Task, items: list[Item], shard: Shard) -> list[dict[str, str]]:
    """This rank's rows of what the untrained upstream agents of `text_mas` say, greedily."""
    rows = []
    for _, chunk in my_chunks(items, shard):
        with torch.no_grad():
            said, _ = text_mas.upstream(
                [task.render_question(i) for i in chunk], task.format_instruction, views=views_of(chunk)
            )
        rows += [{"id": it.id, "context": format_context(s)} for it, s in zip(chunk, said)]
    return rows


def sample_targets(
    task: Task, items: list[Item], shard: Shard, greedy, sampler, data, seed: int, device
) -> list[dict[str, Any]]:
    """Rejection sampling: this rank's rows of the untrained method's first graded-correct sample per item (greedy
    first unless `data.self_greedy_first` is off). A sample is graded on its answer after any think block, and
    kept whole (think block included: the target of a thinking turn)."""
    rows = []
    for index, chunk in my_chunks(items, shard):
        # on the model's device (torch.multinomial refuses a CPU generator for CUDA probabilities); seeded per
        # chunk, so the samples do not depend on how many processes share the chunks
        generator = torch.Generator(device=device).manual_seed(seed * 100_003 + index)
        questions = [task.render_question(i) for i in chunk]
        found: dict[int, str] = {}
        with torch.no_grad():
            for attempt in range(data.self_samples):
                method = greedy if attempt == 0 and data.self_greedy_first else sampler
                outs = method.run(questions, task.format_instruction, generator, views=views_of(chunk))
                for i, (item, out) in enumerate(zip(chunk, outs)):
                    if i not in found and task.grade(answer_text(out.text), item).correct:
                        found[i] = out.text
        rows += [{"id": chunk[i].id, "target": text} for i, text in sorted(found.items())]
    return rows


def reference_texts(task: Task, items: list[Item], chat_template_kwargs: dict[str, Any]) -> dict[str, str]:
    """The task's reference answer of each item, as the turn the solver should produce."""
    thinking = thinks(chat_template_kwargs)
    return {it.id: reference_target(task, it, thinking) for it in items}


def file_texts(path: Path) -> dict[str, str]:
    """Targets from a JSONL file of {"id", "target"} objects; a bad line is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"data.targets: file not found: {path}")
    texts = {}
    for lineno, line, _ in decode_lines(path, path.read_bytes()):  # non-UTF-8: an error naming the line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            texts[str(row["id"])] = str(row["target"])
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with 'id' and 'target' ({e})") from e
    return texts


def encode_targets(tokenizer, items: list[Item], texts: dict[str, str], spec: str) -> tuple[list[Item], dict]:
    """The items that have a target, and each one's target token ids. Raises when none has one."""
    kept = [it for it in items if it.id in texts]
    if not kept:
        raise ValueError(f"no training item has a target (targets: {spec})")
    return kept, {it.id: encode_target(tokenizer, texts[it.id]) for it in kept}


def micro_batch_items(items: list[Item], position: int, per_rank: int, shard: Shard, seed: int) -> list[Item]:
    """This rank's items of micro-batch number `position`: a seeded permutation per epoch over the global batch
    (`per_rank` items times the world size), sliced by rank, so the global order does not depend on the world."""
    global_size = per_rank * shard.world
    n = len(items)
    chosen = []
    for k in range(global_size):
        epoch, index = divmod(position * global_size + k, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        chosen.append(items[int(order[index])])
    return chosen[shard.rank * per_rank : (shard.rank + 1) * per_rank]


def curriculum_rows(probability: float, rows: int, seed: int, position: int, rank: int) -> list[bool]:
    """The channel curriculum's draw for one micro-batch: each row keeps the `full` channel with `probability`.
    Seeded by the run's seed, the micro-batch's position and the rank, so a resumed run draws the same rows."""
    if probability >= 1:
        return [True] * rows
    if probability <= 0:
        return [False] * rows
    generator = torch.Generator().manual_seed((seed * 100_003 + position) * 1_009 + rank)
    return (torch.rand(rows, generator=generator) < probability).tolist()


def make_batch(task: Task, items: list[Item], targets: dict, contexts: dict | None) -> Batch:
    return Batch(
        questions=[task.render_question(it) for it in items],
        targets=[targets[it.id] for it in items],
        contexts=[contexts[it.id] for it in items] if contexts is not None else None,
        views=views_of(items),
    )
