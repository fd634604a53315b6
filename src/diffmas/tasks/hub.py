"""Benchmarks read from a dataset hub or from a local file in the hub dataset's own schema.

This machine cannot reach the hub, so every loader also takes `path=`: a JSON, JSONL(.gz), CSV or parquet
file (or a mapping `{split: file}`) with the same columns as the hub dataset. Rows are mapped to `Item`s
by one `to_item` per benchmark, so a hub download and a local export give identical items.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffmas.tasks.base import Item, Task

PathLike = str | Path


class DatasetUnavailable(RuntimeError):
    """The hub dataset could not be loaded and no local file was given."""


def read_rows(path: PathLike) -> list[dict[str, Any]]:
    """Rows of a local dataset file: .jsonl, .jsonl.gz, .json (a list, or {"data"|"rows"|...: list}), .csv,
    .parquet."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        opener = gzip.open if name.endswith(".gz") else open
        rows = []
        with opener(p, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}:{lineno}: invalid JSON ({e.msg})") from e
        return rows
    if name.endswith(".json"):
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            for key in ("data", "rows", "examples", "test", "train"):
                if isinstance(data.get(key), list):
                    return data[key]
            raise ValueError(f"{p}: expected a JSON list of rows (or an object with a 'data' list)")
        return list(data)
    if name.endswith(".csv"):
        with p.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    raise ValueError(f"{p}: unsupported dataset file type (use .jsonl, .json, .csv or .parquet)")


def field(row: Mapping[str, Any], *names: str, default: Any = ...) -> Any:
    """The first present field among `names`, matched case-insensitively (hub mirrors differ in case)."""
    lower = {k.lower(): k for k in row}
    for name in names:
        key = name if name in row else lower.get(name.lower())
        if key is not None and row[key] is not None:
            return row[key]
    if default is ...:
        raise KeyError(f"row has none of the fields {names}; it has {sorted(row)}")
    return default


def stable_rng(*parts: object) -> random.Random:
    """A Random seeded from a string hash: the same item always gets the same shuffle, on any machine."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class HubTask(Task):
    """A benchmark with a hub id. `path` replaces the hub: one file (served as `path_split`) or {split: file}."""

    hub_id: str = ""
    hub_config: str | None = None
    # our split name -> the hub's split name
    hub_splits: Mapping[str, str] = {"test": "test"}

    def __init__(
        self,
        path: PathLike | Mapping[str, PathLike] | None = None,
        *,
        path_split: str = "test",
        hub_id: str | None = None,
        hub_config: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ):
        if isinstance(path, (str, Path)):
            path = {path_split: path}
        self.paths: dict[str, Path] | None = {k: Path(v) for k, v in path.items()} if path else None
        if hub_id:
            self.hub_id = hub_id
        if hub_config is not None:
            self.hub_config = hub_config
        self.limit = limit
        self.seed = seed
        if self.paths is not None:
            self.source = f"local file ({', '.join(str(p) for p in self.paths.values())})"
        else:
            self.source = f"hub {self.hub_id}" + (f" [{self.hub_config}]" if self.hub_config else "")

    def splits(self) -> tuple[str, ...]:
        return tuple(self.paths) if self.paths is not None else tuple(self.hub_splits)

    def rows(self, split: str) -> list[dict[str, Any]]:
        if split not in self.splits():
            raise ValueError(f"{self.name}: no split {split!r} (have {', '.join(self.splits())})")
        if self.paths is not None:
            return read_rows(self.paths[split])
        return self._hub_rows(split)

    def _hub_rows(self, split: str) -> list[dict[str, Any]]:
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - datasets is a core dependency
            raise DatasetUnavailable("the `datasets` package is needed to load hub datasets") from e
        try:
            ds = datasets.load_dataset(self.hub_id, self.hub_config, split=self.hub_splits[split])
        except Exception as e:  # network errors come in many types
            raise DatasetUnavailable(
                f"{self.name}: could not load hub dataset {self.hub_id!r}"
                + (f" (config {self.hub_config!r})" if self.hub_config else "")
                + f" split {self.hub_splits[split]!r}: {type(e).__name__}: {str(e)[:300]}. "
                f"Pass path=<local .jsonl/.json/.csv/.parquet in the same schema> instead."
            ) from e
        return [dict(r) for r in ds]

    def load(self, split: str = "test") -> list[Item]:
        rows = self.rows(split)
        if self.limit is not None:
            rows = rows[: self.limit]
        items = []
        for index, row in enumerate(rows):
            try:
                items.append(self.to_item(row, index, split))
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(f"{self.name} {split} row {index}: {e}") from e
        if not items:
            raise ValueError(f"{self.name}: split {split!r} is empty")
        return items

    @abstractmethod
    def to_item(self, row: Mapping[str, Any], index: int, split: str) -> Item:
        """Map one row of the hub schema to an Item."""


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return list(value)


__all__ = ["DatasetUnavailable", "HubTask", "as_list", "field", "read_rows", "stable_rng"]
