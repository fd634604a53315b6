"""B10: batches of like length (`group_by_length`, the default of `diffmas eval` and `compare`) against batches in
the split's order: the prompt columns a batch's forwards process, and the time to answer the same items.

A batch pads every prompt segment of its trace to its longest row, and each pad costs a whole forward column (every
layer, the MLP included). This counts, for `latent_mas` over every test item of `--task` with the chain `--roles`
at `--batch`, the prompt columns processed (batch rows x each segment's longest prompt, summed) over the real ones,
in split order and in `evaluation.longest_first` order. With `--time N` it also answers the first N items both ways
(greedy; alternating which goes first each repeat) and prints the ratio of the wall times and how many answers
agree (batched equals one at a time up to float rounding, which the batch's shape changes).

    python -m bench.b10_length_groups [--model smollm2-135m] [--task gsm-symbolic] [--roles default] [--batch 16]
        [--time 32 --latent-steps 2 --new 16 --repeats 2]
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.common import configure_threads, load_model, task_parser
from diffmas.evaluation import batches_of, longest_first, run_batch
from diffmas.methods import MethodConfig, get_method
from diffmas.roles import RoleChain
from diffmas.tasks import get_task
from diffmas.tasks.base import Item, views_of


def prompt_columns(method, task, batches: list[list[Item]]) -> int:
    """Prompt columns the batches' forwards process: each segment is as wide as its longest row."""
    fmt = task.format_instruction
    total = 0
    for batch in batches:
        questions, views = [task.render_question(it) for it in batch], views_of(batch)
        for role in method.roles.roles:
            total += len(batch) * method.longest_prompt(role, questions, fmt, views)
    return total


def answer_all(method, task, batches: list[list[Item]]) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    texts = {it.id: out.text for batch in batches for it, out in zip(batch, run_batch(method, task, batch))}
    return time.perf_counter() - start, texts


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = task_parser(__doc__, task="gsm-symbolic", roles="default", new=32)
    parser.add_argument(
        "--time", type=int, default=0, help="answer the first N items both ways and time them"
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    backbone = load_model(args.model)
    task, roles = get_task(args.task), RoleChain.load(args.roles)
    config = MethodConfig(latent_steps=args.latent_steps, max_new_tokens=args.new)
    method = get_method("latent_mas", backbone, roles, config)
    items = task.load("test")
    real = prompt_columns(method, task, [[it] for it in items])
    plain = prompt_columns(method, task, batches_of(items, args.batch))
    grouped = prompt_columns(
        method, task, batches_of(longest_first(items, task, backbone.tokenizer), args.batch)
    )
    out = {"real": real, "split_order": plain / real, "grouped": grouped / real}
    print(
        f"B10 on {args.model}, task {args.task} ({len(items)} test items), roles {args.roles}, batch {args.batch}: "
        f"prompt columns processed / real: split order {plain / real:.3f}x, grouped {grouped / real:.3f}x "
        f"({plain / grouped:.2f}x fewer)",
        flush=True,
    )
    if args.time:
        timed = items[: args.time]
        ways = {
            "split order": batches_of(timed, args.batch),
            "grouped": batches_of(longest_first(timed, task, backbone.tokenizer), args.batch),
        }
        cols = {name: prompt_columns(method, task, b) for name, b in ways.items()}
        with torch.no_grad():
            answer_all(method, task, ways["grouped"][-1:])  # warm-up (allocator, kernels), untimed
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(args.repeats):
            texts = {}
            for name in list(ways)[:: 1 if r % 2 == 0 else -1]:
                s, texts[name] = answer_all(method, task, ways[name])
                seconds[name].append(s)
            same = sum(texts["split order"][i] == texts["grouped"][i] for i in texts["grouped"])
        ratio = statistics.median(p / g for p, g in zip(seconds["split order"], seconds["grouped"]))
        out.update(time_ratio=ratio, timed_items=len(timed), same_answers=same)
        print(
            f"first {len(timed)} items, {args.latent_steps} latent steps per agent, {args.new} answer tokens, "
            f"{args.repeats} repeat(s): prompt columns {cols['split order']} -> {cols['grouped']}; seconds "
            f"split order {statistics.median(seconds['split order']):.1f}, grouped "
            f"{statistics.median(seconds['grouped']):.1f}: grouped is {ratio:.2f}x faster; same answer for {same}/{len(timed)} items",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
