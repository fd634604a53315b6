"""The same items through `diffmas eval` and through lm-evaluation-harness, compared item by item (docs/lm_eval.md).

    python scripts/lm_eval_compare.py --data tests/assets/arith.jsonl --out runs/lm-eval-compare

Writes an lm-eval task (a YAML over the JSONL, graded by the `diffmas_grade` filter), runs the two command lines
as a user would (`diffmas eval` and `python -m diffmas.lm_eval_model`), then compares each item's answer text and
verdict. Prints both accuracies, writes `comparison.json`, and exits 1 when any item differs. Greedy decoding,
no stop strings in either path, the same answer budget and the format instruction of `--answer-type`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

TASK = "diffmas_compare"


def task_yaml(data: Path, max_new_tokens: int, answer_type: str) -> str:
    """A generation task over `data`: the question as the context, no stop string (diffmas eval stops at the end
    of the answer or the budget), scored by `exact_match` after the `diffmas_grade` filter."""
    return (
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data.resolve()}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        f"generation_kwargs:\n  until: []\n  max_gen_toks: {max_new_tokens}\n  do_sample: false\n"
        "filter_list:\n  - name: diffmas\n    filter:\n"
        f"      - function: diffmas_grade\n        answer_type: {answer_type}\n"
        "      - function: take_first\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )


def _run(argv: list[str]) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(diffmas_rows: list[dict[str, Any]], lm_eval_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per item: diffmas eval's output and verdict (its samples.jsonl rows) beside lm-eval's raw response and exact
    match (its logged samples, whose `doc` carries the JSONL row)."""
    ours = {str(r["id"]): r for r in diffmas_rows}
    theirs = {str(r["doc"]["id"]): r for r in lm_eval_rows}
    if ours.keys() != theirs.keys():
        raise SystemExit(f"the two runs answered different items: {sorted(ours)} vs {sorted(theirs)}")
    items = []
    for item_id, row in ours.items():
        other = theirs[item_id]
        items.append(
            {
                "id": item_id,
                "diffmas_correct": bool(row["correct"]),
                "lm_eval_correct": bool(other["exact_match"]),
                "same_text": row["output"] == other["resps"][0][0],
                "diffmas_extracted": row["extracted"],
                "lm_eval_filtered": other["filtered_resps"][0],  # after take_first: one string
            }
        )
    n = len(items)
    return {
        "n": n,
        "diffmas_eval_accuracy": sum(i["diffmas_correct"] for i in items) / n,
        "lm_eval_accuracy": sum(i["lm_eval_correct"] for i in items) / n,
        "items_agree": all(i["diffmas_correct"] == i["lm_eval_correct"] and i["same_text"] for i in items),
        "items": items,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="a JSONL with id, question, answer (as strings)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="latent_mas")
    parser.add_argument("--answer-type", default="math")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    out: Path = args.out
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / f"{TASK}.yaml").write_text(task_yaml(args.data, args.max_new_tokens, args.answer_type))
    diffmas_cli = Path(sys.executable).with_name("diffmas")
    common = ["--model", args.model, "--method", args.method, "--max-new-tokens", str(args.max_new_tokens)]
    _run([str(diffmas_cli), "eval", "--task", str(args.data), *common, "--batch-size", str(args.batch_size),
          "--out", str(out / "diffmas-eval")])  # fmt: skip
    model_args = f"model={args.model},method={args.method},answer_type={args.answer_type}"
    _run([sys.executable, "-m", "diffmas.lm_eval_model", "--model_args", model_args, "--tasks", TASK,
          "--include_path", str(tasks), "--batch_size", str(args.batch_size), "--device", "cpu",
          "--log_samples", "--output_path", str(out / "lm-eval")])  # fmt: skip
    (samples,) = (out / "lm-eval").rglob(f"samples_{TASK}_*.jsonl")
    result = compare(read_jsonl(out / "diffmas-eval" / "samples.jsonl"), read_jsonl(samples))
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['n']} items: diffmas eval accuracy {result['diffmas_eval_accuracy']:.3f}, "
        f"lm-eval exact_match {result['lm_eval_accuracy']:.3f}; "
        + (
            "every item agrees (text and verdict)"
            if result["items_agree"]
            else "ITEMS DIFFER: see comparison.json"
        )
    )
    sys.exit(0 if result["items_agree"] else 1)


if __name__ == "__main__":
    main()
