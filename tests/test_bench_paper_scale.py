"""bench/paper_scale.py: the paper's shapes are Qwen3's (parameter counts on the meta device, no memory), the
floor's byte counts follow them, and `--cpu` runs every section end to end (shrunk further here)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from bench import paper_scale


def _meta_model(shape: str):
    from transformers import AutoModelForCausalLM

    from diffmas.testing import tiny_tokenizer

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            paper_scale.qwen3_config(shape, tiny_tokenizer()), dtype=torch.bfloat16
        )


@pytest.mark.parametrize(("shape", "billions"), [("qwen3-8b", 8.19), ("qwen3-4b", 4.02)])
def test_the_shapes_are_qwen3s(shape, billions):
    model = _meta_model(shape)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)


def test_a_decode_step_reads_the_weights_but_an_untied_input_table():
    untied, tied = _meta_model("qwen3-8b"), _meta_model("qwen3-4b")
    total = sum(p.numel() * 2 for p in untied.parameters())
    assert paper_scale.weight_bytes_per_step(untied) == total - 151936 * 4096 * 2
    assert paper_scale.weight_bytes_per_step(tied) == sum(p.numel() * 2 for p in tied.parameters())
    # K and V, 36 layers, 8 KV heads of 128 dims, 2 bytes each: 144 KiB per cached column of one row
    assert paper_scale.kv_bytes_per_column(untied) == 2 * 36 * 8 * 128 * 2


def test_the_cpu_run_measures_every_section(tmp_path, monkeypatch):
    small = replace(
        paper_scale.CPU_SIZES, latents=2, batches=(1, 2), new=4, repeats=1, copy_mib=16, equal_batch=2,
        equal_new=4, target=32, long_targets=(64, 96), chunk=32,
    )  # fmt: skip
    monkeypatch.setattr(paper_scale, "CPU_SIZES", small)
    torch.set_num_threads(1)  # many small ops: two threads only add synchronisation on a busy machine
    out = tmp_path / "figures.json"
    result = paper_scale.main(["--cpu", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    f = result["figures"]
    assert result["model"] == "scaled" and result["device"] == "cpu" and result["dtype"] == "float32"
    assert f["bandwidth"]["bytes_per_s"] > 0
    for batch in (1, 2):
        d = f[f"decode b{batch}"]
        for key in (
            "ours_tokens_per_s",
            "generate_tokens_per_s",
            "ours_floor_fraction",
            "latent_over_decode",
        ):
            assert math.isfinite(d[key]) and d[key] > 0, key
        assert d["rows_agree"] == f"{batch}/{batch}"  # greedy, fp32: ours and generate write the same tokens
    eq = f["batch==alone"]
    assert eq["rows_identical"] == eq["rows"] == 2 and eq["max_logprob_gap"] < 1e-3
    assert f["train"]["diffmas_over_plain"] > 0 and f["train"]["tokens"] > 32
    assert [k for k in f if k.startswith("memory ") and k[7:].isdigit()] == [
        "memory 32",
        "memory 64",
        "memory 96",
    ]
    assert len(f["memory growth"]["bytes_per_token"]) == 2
    assert "compiled" not in f  # CUDA only


def test_a_compiled_batch_past_the_budget_is_skipped_and_said_so():
    report = paper_scale.Report("scaled", "cpu", "float32", {})
    sizes = replace(paper_scale.CPU_SIZES, batches=(1, 16))
    paper_scale.decode_section(
        report, None, sizes, None, 1e9, "reduce-overhead", time_left=lambda: paper_scale.COMPILE_RESERVE - 1
    )  # nothing is built or run: the budget is checked first
    assert report.figures == {"compiled b1": {"skipped": True}, "compiled b16": {"skipped": True}}
