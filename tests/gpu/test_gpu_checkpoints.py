"""The GPU check of the checkpoint store: a checkpoint's RNG states include each CUDA generator (dropout on a GPU
draws there), as JSON, and a resume puts them back."""

from __future__ import annotations

import json

import pytest
import torch

from diffmas.training.checkpoints import rng_state, set_rng_state

pytestmark = pytest.mark.gpu


def test_the_cuda_generator_round_trips_through_the_checkpoint_json(cuda_only):
    torch.rand(1, device="cuda")  # CUDA in use, as in a training run on the GPU
    saved = json.loads(json.dumps(rng_state()))  # what rng.json holds
    assert len(saved["cuda"]) == torch.cuda.device_count()
    first = torch.rand(4, device="cuda")
    set_rng_state(saved)
    assert torch.equal(torch.rand(4, device="cuda"), first)
