"""The packaged presets are the source of `diffmas demo`; configs/ holds copies for `diffmas compare` and the
docs. Nothing else keeps them equal, so this test does."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "demo_paper.yaml"])
def test_configs_copy_equals_the_packaged_preset(name):
    packaged = resources.files("diffmas").joinpath(f"presets/{name}").read_bytes()
    assert (CONFIGS / name).read_bytes() == packaged, (
        f"configs/{name} differs from src/diffmas/presets/{name} (the source): copy the preset over it"
    )


ROOT = Path(__file__).parents[1]


def _pointed_configs() -> list[Path]:
    """Every config README, CONTRIBUTING or docs/*.md (results excepted: they record past runs) names, and the
    packaged presets (the demo's source)."""
    import re

    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    names = set()
    for path in texts:
        if path.name == "results.md":
            continue
        names |= set(re.findall(r"configs/[\w/.-]+\.yaml", path.read_text(encoding="utf-8")))
    found = [ROOT / n for n in sorted(names) if (ROOT / n).is_file()]
    presets = resources.files("diffmas").joinpath("presets")
    return found + [
        Path(str(presets.joinpath(p.name))) for p in presets.iterdir() if p.name.endswith(".yaml")
    ]


def _bigbench(task: str) -> bool:
    from diffmas.tasks.bigbench import _ALIASES

    return task.startswith("bigbench:") or task in _ALIASES


def test_no_config_the_docs_point_to_needs_bigbench():
    """The package index no longer serves bigbench==1.0.0: what a newcomer is told to run must not need it."""
    import yaml

    configs = _pointed_configs()
    assert any(p.name == "train_smollm2_ransom_note.yaml" for p in configs)
    for path in configs:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        tasks = [data.get("task"), data.get("train_task"), (data.get("data") or {}).get("task")]
        needing = [t for t in tasks if isinstance(t, str) and _bigbench(t)]
        assert not needing, f"{path} uses BIG-bench task {needing[0]!r}, which a new machine cannot fetch"
