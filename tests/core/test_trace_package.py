"""The trace as a package: the head and the model's logit transform are applied in one place (`ModelParts.logits`),
which the trace, the static answer and the load-time check all go through; the transformers cache API is used
nowhere else in diffmas; every public name is still importable from `diffmas.trace`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import diffmas.trace
from diffmas.trace import LatentTrace, ModelParts, check_head

SRC = Path(diffmas.trace.__file__).parents[1]
# names of transformers' cache API: its module and the classes a cache is built from
CACHE_API = {"DynamicCache", "StaticCache", "DynamicLayer", "StaticLayer", "Cache", "HybridCache"}


def _prompted(model: torch.nn.Module) -> LatentTrace:
    trace = LatentTrace(model, 2)
    trace.append_tokens([[5, 6, 7, 8], [9, 10]], "solver")
    return trace


def test_every_head_application_goes_through_model_parts_logits(llama, monkeypatch):
    """Shift `ModelParts.logits` by a constant: the trace's logits, the static answer's and check_head all move
    with it, so none of them applies the head (or its transform) on its own."""
    with torch.no_grad():
        plain = _prompted(llama.model)
        plain_logits = plain.logits(plain.last_hidden)
        plain_step = _prompted(llama.model).static_answer("solver", 2).step(torch.tensor([3, 4]))

        calls: list[int] = []
        original = ModelParts.logits

        def shifted(self: ModelParts, hidden: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return original(self, hidden) + 7.0

        monkeypatch.setattr(ModelParts, "logits", shifted)
        trace = _prompted(llama.model)
        torch.testing.assert_close(trace.logits(trace.last_hidden), plain_logits + 7.0)
        step = _prompted(llama.model).static_answer("solver", 2).step(torch.tensor([3, 4]))
        torch.testing.assert_close(step, plain_step + 7.0)
        assert len(calls) == 2
        with pytest.raises(ValueError, match="differ from the model's own"):
            check_head(llama.model)
        assert len(calls) == 3


def _cache_api_imports(path: Path) -> list[str]:
    """`transformers.cache_utils` imports and cache classes imported from transformers, as 'line: name'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformers"):
            names = {a.name for a in node.names}
            if node.module == "transformers.cache_utils" or names & CACHE_API:
                found.append(f"{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}" for a in node.names if a.name == "transformers.cache_utils"
            ]
    return found


def test_the_cache_api_is_used_only_inside_the_trace_package():
    outside = {
        str(path.relative_to(SRC)): hits
        for path in sorted(SRC.rglob("*.py"))
        if path.relative_to(SRC).parts[0] != "trace" and (hits := _cache_api_imports(path))
    }
    assert outside == {}
    inside = [hit for path in (SRC / "trace").glob("*.py") for hit in _cache_api_imports(path)]
    assert inside  # the scan sees the package's own imports, so an empty `outside` means something


@pytest.mark.parametrize(
    "name",
    [
        "CHANNEL_MODES", "ChannelMode", "GrowingLayer", "LatentTrace", "ModelParts", "Observer", "RoleHook",
        "Segment", "SegmentKind", "StaticAnswer", "StepLayer", "attention_masks", "check_head", "left_pad",
        "logit_transform", "new_cache", "observe", "release_static_buffers", "sliding_window_of", "step_mask",
    ],
)  # fmt: skip
def test_the_public_names_of_the_former_module_are_importable_from_the_package(name):
    assert name in diffmas.trace.__all__
    assert getattr(diffmas.trace, name) is not None
