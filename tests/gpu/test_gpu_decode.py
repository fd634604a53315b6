"""The GPU check's decode step: our loop (dynamic, static, and on CUDA static under CUDA graphs) against `generate`
from the same prefilled trace (bench/b7_decode.py), greedy tokens checked equal at batch 1 and 8 (pads in the
middle), tokens/s printed (run with -s)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def _compile_counters():
    from torch._dynamo.utils import counters

    counters.clear()
    return counters


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
    counters = _compile_counters()
    for model in models:
        rates = main(["--model", model, "--device", str(device), *sizes])
        for r in rates.values():  # tokens agreed (else raised)
            assert r["generate"] > 0 and r["ours_sync8"] > 0 and r["static"] > 0
            assert r["kv_static"] <= r["kv_dynamic"]
            if device.type == "cuda":
                assert r["compiled"] > 0
    if device.type == "cuda":  # did CUDA graphs run (the static answer reuses one store for their addresses)?
        _assert_graphed(counters)


def _assert_graphed(counters) -> None:
    """A compiled graph exists and inductor skipped CUDA graphs for none of it (a skip falls back to eager
    launches silently: the run still passes, slower)."""
    skips = counters["inductor"].get("cudagraph_skips", 0)
    print("inductor cudagraph skips:", skips, "| graphs compiled:", counters["stats"].get("unique_graphs", 0))
    assert counters["stats"].get("unique_graphs", 0) > 0, "nothing was compiled"
    assert skips == 0, f"inductor skipped CUDA graphs {skips} time(s): {dict(counters['inductor'])}"


def test_compiled_decode_is_graphed_in_bf16(device, cuda_only):
    """bf16, the dtype a GPU run uses: the static answer compiled with CUDA graphs at batch 4, pads in the prompts;
    every answer token and the trace on the device; zero CUDA-graph skips."""
    from diffmas.decoding import DecodeConfig, decode
    from diffmas.testing import tiny_backbone
    from diffmas.trace import LatentTrace

    backbone = tiny_backbone("qwen2", layers=4, hidden=128, init_std=0.02)
    backbone.model.to(device=device, dtype=torch.bfloat16)
    prompts = [[5, 6, 7, 8, 9][: 5 - i % 3] for i in range(4)]
    config = DecodeConfig(max_new_tokens=24, static_cache=True, compile="reduce-overhead")
    counters = _compile_counters()
    with torch.no_grad():
        for _ in range(2):  # the second call replays what the first recorded
            trace = LatentTrace(backbone.model, len(prompts))
            out = decode(trace, prompts, "solver", backbone.tokenizer, config, set(), sync_every=8)
    assert trace.device.type == "cuda"
    assert [len(d.token_ids) for d in out] == [24] * 4
    _assert_graphed(counters)
