"""`GrowingLayer.store_allocations`, the public counter benchmarks read instead of patching the cache layer."""

from __future__ import annotations

import torch

from diffmas.testing import tiny_backbone
from diffmas.trace import GrowingLayer, LatentTrace


def test_store_allocations_count_each_regrow_of_key_and_value_stores():
    model = tiny_backbone("llama").model
    layers = model.config.num_hidden_layers
    with torch.no_grad():
        trace = LatentTrace(model, 1)
        start = GrowingLayer.store_allocations
        trace.append_tokens([[5, 6, 7]], "s")
        assert GrowingLayer.store_allocations - start == 2 * layers  # one key and one value store per layer
        for _ in range(20):  # within the first store's capacity (64 columns): no new store
            trace.append_step(torch.tensor([7]), "s")
        assert GrowingLayer.store_allocations - start == 2 * layers
        for _ in range(60):  # past it: each layer regrows both stores once
            trace.append_step(torch.tensor([7]), "s")
        assert GrowingLayer.store_allocations - start == 4 * layers
