"""Build tests/assets/code_answers.jsonl from `diffmas eval --task humaneval` run directories.

Each row keeps the raw HumanEval problem, the model's output and the verdict that run's grader gave
it, so tests/grading/test_model_answers.py can check that a new grader keeps the verdicts of honest
answers. Usage:

    python scripts/make_code_fixture.py RUN_DIR [RUN_DIR ...] --out tests/assets/code_answers.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffmas.records import read_jsonl
from diffmas.tasks.humaneval import humaneval_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="eval output directories (with samples.jsonl)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    problems = {row["task_id"]: row for row in humaneval_rows()}
    rows, seen = [], set()
    for run in args.runs:
        for sample in read_jsonl(run / "samples.jsonl"):
            if sample["id"] in seen:
                continue
            seen.add(sample["id"])
            problem = {k: problems[sample["id"]][k] for k in ("task_id", "prompt", "test", "entry_point")}
            problem["canonical_solution"] = ""  # not needed to grade, and no answer key in the fixture
            rows.append(
                {
                    "task_id": sample["id"],
                    "problem": problem,
                    "output": sample["output"],
                    "correct": sample["correct"],
                    "reason": sample["reason"],
                }
            )
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    passed = sum(r["correct"] for r in rows)
    print(f"wrote {len(rows)} answers ({passed} passing) to {args.out}")


if __name__ == "__main__":
    main()
