"""The GPU check: run by scripts/gpu_check.sh; skipped without CUDA unless the script's --cpu mode
sets DIFFMAS_GPU_CHECK_DEVICE=cpu (then the CUDA-only parts skip and the rest runs on CPU in fp32)."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: the GPU check (tests/gpu), skipped without CUDA")


def check_device() -> torch.device:
    return torch.device(os.environ.get("DIFFMAS_GPU_CHECK_DEVICE", "cuda"))


@pytest.fixture
def device() -> torch.device:
    dev = check_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA here (scripts/gpu_check.sh --cpu runs these on CPU)")
    return dev


@pytest.fixture
def cuda_only(device):
    if device.type != "cuda":
        pytest.skip("CUDA only")
