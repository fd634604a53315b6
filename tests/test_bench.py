"""The benchmarks run (tiny model, minimal sizes) and print their ratio last. Nothing here is timed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, run_all  # noqa: E402

RATIO_LINE = re.compile(r"^(B[1-5]) RATIO \d+\.\d\dx \(.+; target .+\) -> (PASS|FAIL) \[quick sizes\]$")


@pytest.mark.parametrize("bench_id", sorted(run_all.BENCHMARKS))
def test_benchmark_runs_and_prints_its_ratio_last(bench_id, capsys):
    module = sys.modules[run_all.BENCHMARKS[bench_id].__module__]
    assert common.main(module.ID, module.WHAT, module.run, ["--quick", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = RATIO_LINE.match(lines[-1])
    assert match, lines[-1]
    assert match.group(1) == bench_id


def test_table_lists_every_result(capsys):
    results = [
        common.BenchResult(
            id=f"B{i}",
            what="w",
            ratio=1.0 + i,
            ratio_label="a / b",
            target="<= 2x",
            passed=i < 2,
            model="tiny",
        )
        for i in (1, 2)
    ]
    run_all.print_table(results, "tiny")
    out = capsys.readouterr().out
    assert "B1" in out and "B2" in out and "PASS" in out and "FAIL" in out and "3.00x" in out


def test_interleaved_timer_alternates_order_and_pairs_ratios():
    order: list[str] = []
    variants = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = common.time_interleaved(variants, repeats=3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert common.paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_plain_sequence_has_the_trace_token_count():
    setup = common.training_setup("tiny", batch_size=2, latent_steps=3)
    _, _, diffmas_len = common.diffmas_loss(setup)
    _, _, plain_len = common.plain_loss(setup)
    assert diffmas_len == plain_len


def test_bench_command_finds_the_checkout():
    from diffmas.cli.bench_cmd import _repo_root

    assert _repo_root() == ROOT


def test_profile_accounts_for_the_step_and_restores_the_patches(capsys):
    from bench import profile_steps
    from diffmas.trace import LatentTrace

    forward = LatentTrace._forward
    args = [
        "--model",
        "tiny",
        "--batch",
        "2",
        "--latent-steps",
        "2",
        "--max-new-tokens",
        "3",
        "--repeats",
        "1",
    ]
    assert profile_steps.main(args + ["--ops", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "latent_mas rollout" in out and "DiffMAS training step" in out
    assert "body: MLP" in out and "backward (autograd)" in out and "top ops" in out
    assert LatentTrace._forward is forward  # the timers are gone after the run


def test_dtype_flag_loads_the_model_in_bf16_and_says_so(capsys, monkeypatch):
    import torch

    from bench import b2_latent_vs_single

    monkeypatch.setenv(common.DTYPE_ENV, "float32")  # restored (unset) after the test, whatever main() sets
    args = ["--quick", "--threads", "1", "--dtype", "bfloat16"]
    assert common.main("B2", b2_latent_vs_single.WHAT, b2_latent_vs_single.run, args) == 0
    assert "bfloat16" in capsys.readouterr().out
    assert next(common.load_model("tiny").model.parameters()).dtype == torch.bfloat16
    monkeypatch.setenv(common.DTYPE_ENV, "int4")
    with pytest.raises(ValueError, match="DIFFMAS_BENCH_DTYPE"):
        common.load_model("tiny")


def test_dtype_check_runs_and_prints_its_ratio_last(capsys):
    from bench import dtype_check

    assert dtype_check.main(["--quick", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("native bf16 matmuls on this CPU:")
    assert re.match(r"^DTYPE RATIO \d+\.\d\dx ", lines[-1]), lines[-1]
    assert sum(" rows " in line for line in lines) == 2  # forward, forward+backward


def test_kernel_check_runs_and_prints_its_ratio_last(capsys):
    from bench import kernel_check

    assert kernel_check.main(["--quick", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("streaming read bandwidth")
    assert sum(" rows " in line and "GB/s" in line for line in lines) == 2  # 1 and 2 rows
    assert re.match(r"^ROWS RATIO \d+\.\d\dx \(2 rows vs 1;", lines[-1]), lines[-1]


def test_b6_before_variants_reproduce_the_old_copies():
    """bench.b6_scale's "before" really takes the old paths: more KV concatenated, more store regrows."""
    from functools import partial

    from bench.b6_scale import CheckpointedWithoutGrad, copies, decode_steps, shrink_batch
    from diffmas.testing import tiny_backbone
    from diffmas.trace import LatentTrace

    model = tiny_backbone("llama").model
    old = copies(partial(decode_steps, model, CheckpointedWithoutGrad, 6, prompt=8))["cat_bytes"]
    new = copies(partial(decode_steps, model, LatentTrace, 6, prompt=8))["cat_bytes"]
    assert old > new
    assert (
        copies(partial(shrink_batch, model, 8, old=True))["regrows"]
        > copies(partial(shrink_batch, model, 8, old=False))["regrows"]
    )


@pytest.mark.parametrize("name", ["latent_mas", "stitch_mas", "no_comm", "donor", "single_latent"])
def test_make_method_builds_the_realigner_of_every_latent_method_up_front(name):
    """The ridge solve is a one-off cost, never part of a timed rollout, for every method that takes latent
    steps (the class says so, not a list of names); methods without latent steps never pay it."""
    from diffmas.methods import MethodConfig
    from diffmas.testing import tiny_backbone

    backbone = tiny_backbone("llama")
    assert common.make_method(name, backbone, MethodConfig(latent_steps=1))._realigner is not None
    assert common.make_method("single", backbone, MethodConfig(latent_steps=1))._realigner is None


def test_b7_mixed_layout_checks_every_variants_tokens_against_generate(capsys):
    from bench import b7_decode

    try:
        rates = b7_decode.main(["--batches", "3", "--new", "4", "--repeats", "1", "--mixed"])
    finally:
        b7_decode.MIXED = False
    (r,) = rates.values()  # the variants' greedy tokens agreed (else it raised)
    assert r["kv_static"] < r["kv_dynamic"]  # the mixed layout's pads add up; compaction removes them
    assert {"uncompacted", "ours_sync8", "static", "generate"} <= set(r)
    assert "tokens agree: True" in capsys.readouterr().out


def test_b9_counts_what_compaction_removes_in_each_channel():
    from bench import b9_compaction

    out = b9_compaction.main(["--model", "tiny", "--batch", "4", "--latent-steps", "2", "--new", "8"])
    full, latents = out["full"], out["latents"]
    assert full["width"] == latents["width"]  # the same trace, read through another mask
    assert latents["readable"] < full["readable"] == full["real"]  # the Solver reads no upstream prompt
    assert latents["held"] < full["held"] <= full["width"]
    assert latents["kv_after_mib"] < full["kv_after_mib"] <= full["kv_before_mib"]
    assert full["sizing_s"] > 0 and full["building_s"] > 0


def test_b10_counts_fewer_pad_columns_for_grouped_batches_and_times_both():
    from pathlib import Path

    from bench import b10_length_groups

    asset = str(Path(__file__).parent / "assets" / "arith.jsonl")
    out = b10_length_groups.main(
        [
            "--model",
            "tiny",
            "--task",
            asset,
            "--batch",
            "2",
            "--time",
            "5",
            "--new",
            "2",
            "--latent-steps",
            "1",
        ]
    )
    assert 1.0 <= out["grouped"] < out["split_order"]  # pads remain, fewer of them
    assert out["timed_items"] == 5 and out["same_answers"] == 5 and out["time_ratio"] > 0
