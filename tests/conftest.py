"""Shared fixtures: tiny in-process backbones (no download) for every architecture family we test on."""

from __future__ import annotations

import pytest
import torch

from diffmas.testing import tiny_backbone

ARCHS = ("llama", "qwen2")  # tied head (SmolLM2-like), untied head (Qwen2.5-like)

QUESTIONS = [
    "What is 12 + 30?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?",
    "yes or no?",
    "def add(a, b):",
]


def pytest_configure(config):
    """Where this machine cannot give the strict code sandbox, grade in the weak one (and say so):
    the tests of the strict layers skip themselves, the rest still check verdicts."""
    import os

    from diffmas.grading.sandbox import missing_layers

    if missing_layers() and "DIFFMAS_SANDBOX" not in os.environ:
        os.environ["DIFFMAS_SANDBOX"] = "weak"
        print(f"[tests] strict sandbox layers missing here ({', '.join(missing_layers())}): weak mode")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(params=ARCHS)
def backbone(request):
    return tiny_backbone(request.param)


@pytest.fixture
def llama():
    return tiny_backbone("llama")


@pytest.fixture
def qwen2():
    return tiny_backbone("qwen2")


@pytest.fixture
def questions():
    return list(QUESTIONS)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """The tiny Llama as a local HF folder: what a config or `--model` names when the backbone is loaded from disk
    (read only: tests load it, never write into it)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny = tiny_backbone("llama")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder
