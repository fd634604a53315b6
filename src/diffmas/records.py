"""Per-item records on disk (`samples.jsonl`, `metrics.jsonl`): one reading rule for every reader, torch-free so
that rendering a report never imports the model stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a run killed mid-write) is skipped, any other bad line is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    return rows
