"""The GPU check's decode step: our loop (dynamic, static, and on CUDA static under CUDA graphs) against `generate`
from the same prefilled trace (bench/b7_decode.py), greedy tokens checked equal at batch 1 and 8 (pads in the
middle), tokens/s printed (run with -s)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def test_decode_loop_against_generate(device):
    from bench.b7_decode import main
    from diffmas.embedded import EMBEDDED, default_cache_dir

    models = ["tiny"]
    cached = "smollm2-135m" in EMBEDDED and (default_cache_dir() / "models" / "smollm2-135m").is_dir()
    if device.type == "cuda" and cached:  # on CPU it alone would take minutes
        models.append("smollm2-135m")
    # on CUDA the static answer is also compiled with CUDA graphs (the compile is in the untimed warm-up)
    sizes = (
        ["--batches", "1", "8", "--new", "64", "--repeats", "3", "--compile", "reduce-overhead"]
        if device.type == "cuda"
        else ["--batches", "1", "4", "--new", "16"]
    )
    for model in models:
        rates = main(["--model", model, "--device", str(device), *sizes])
        for r in rates.values():  # tokens agreed (else raised)
            assert r["generate"] > 0 and r["ours_sync8"] > 0 and r["static"] > 0
            assert r["kv_static"] <= r["kv_dynamic"]
    if device.type == "cuda":  # did CUDA graphs run (the static answer reuses one store for their addresses)?
        from torch._dynamo.utils import counters

        print("inductor cudagraph skips:", counters["inductor"].get("cudagraph_skips", 0))
