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
