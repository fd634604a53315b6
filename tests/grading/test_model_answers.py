"""Real model-written HumanEval answers keep the verdicts the previous grader gave them.

`tests/assets/code_answers.jsonl` holds answers SmolLM2-135M wrote (`diffmas eval --task humaneval
--method single --max-new-tokens 160`), passing and failing ones, with the problem itself and the
verdict of the grader before the trusted-verdict redesign (same-process tests, commit 3a0d089). The
redesign changes who decides, not what an honest answer scores. `scripts/make_code_fixture.py` rebuilds
the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmas.grading import grade
from diffmas.tasks.hub_code import humaneval_item

ROWS = [json.loads(line) for line in (Path(__file__).parents[1] / "assets/code_answers.jsonl").open()]


class _CodeTask:
    answer_type = "code"


def test_the_fixture_has_both_verdicts():
    verdicts = {r["correct"] for r in ROWS}
    assert verdicts == {True, False} and len(ROWS) >= 20


@pytest.mark.parametrize("row", ROWS, ids=[r["task_id"] for r in ROWS])
def test_verdict_is_unchanged(row):
    item = humaneval_item(row["problem"])
    g = grade(_CodeTask(), row["output"], item)
    assert g.correct == row["correct"], (g.reason, row["reason"])
    assert g.reason.split(":")[0] == row["reason"].split(":")[0]  # failed stays failed, error stays error
