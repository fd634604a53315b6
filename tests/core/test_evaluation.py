"""`run_eval` and `diffmas eval`: the records written, resumption, and refusal to mix configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffmas.evaluation import EvalConfig, read_samples, run_eval

ASSET = Path(__file__).parents[1] / "assets" / "arith.jsonl"
ROW_FIELDS = {
    "id", "method", "question", "output", "extracted", "gold", "correct",
    "generated_tokens", "trace_len", "seconds",
}  # fmt: skip


def _cfg(tmp_path, **kw) -> EvalConfig:
    base = dict(
        task=str(ASSET),
        method="latent_mas",
        latent_steps=2,
        max_new_tokens=5,
        batch_size=2,
        out=str(tmp_path),
    )
    return EvalConfig(**{**base, **kw})


def test_eval_writes_samples_and_summary(llama, tmp_path):
    summary = run_eval(_cfg(tmp_path, limit=3), backbone=llama)
    rows = read_samples(tmp_path / "samples.jsonl")
    assert len(rows) == 3 and [r["id"] for r in rows] == ["a1", "a2", "a3"]
    assert set(rows[0]) >= ROW_FIELDS
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["n"] == 3 and on_disk["method"] == "latent_mas" and on_disk["task"] == "arith"
    assert on_disk["config"]["latent_steps"] == 2
    assert summary["accuracy"] == sum(r["correct"] for r in rows) / 3
    assert all(r["trace_len"] > 0 and r["generated_tokens"] >= 1 for r in rows)


def test_eval_resumes_without_redoing_items(llama, tmp_path):
    run_eval(_cfg(tmp_path, limit=2), backbone=llama)
    first = read_samples(tmp_path / "samples.jsonl")
    run_eval(_cfg(tmp_path, limit=5), backbone=llama)
    rows = read_samples(tmp_path / "samples.jsonl")
    assert [r["id"] for r in rows] == ["a1", "a2", "a3", "a4", "a5"]
    assert rows[:2] == first


def test_batched_eval_equals_unbatched(qwen2, tmp_path):
    run_eval(_cfg(tmp_path / "b1", batch_size=1), backbone=qwen2)
    run_eval(_cfg(tmp_path / "b4", batch_size=4), backbone=qwen2)
    one = read_samples(tmp_path / "b1" / "samples.jsonl")
    four = read_samples(tmp_path / "b4" / "samples.jsonl")
    assert [r["output"] for r in one] == [r["output"] for r in four]


def test_eval_refuses_to_mix_configs(llama, tmp_path):
    run_eval(_cfg(tmp_path, limit=1), backbone=llama)
    with pytest.raises(ValueError, match="differs in: latent_steps"):
        run_eval(_cfg(tmp_path, limit=1, latent_steps=3), backbone=llama)


def test_torn_last_line_is_ignored_but_other_bad_lines_are_errors(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"')
    assert read_samples(path) == [{"id": "a"}]
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(ValueError, match="samples.jsonl:2"):
        read_samples(path)


def test_samples_option_records_repeated_answers(llama, tmp_path):
    run_eval(_cfg(tmp_path, limit=2, samples=3), backbone=llama)
    rows = read_samples(tmp_path / "samples.jsonl")
    assert all(len(r["sample_answers"]) == 3 and len(r["sample_correct"]) == 3 for r in rows)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"method": "nope"}, "unknown method"),
        ({"realign": "x"}, "unknown realign"),
        ({"batch_size": 0}, "greater"),
    ],
)
def test_bad_config_is_rejected(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, **kw)


def test_donor_pairing_is_drawn_over_the_split_not_the_batch(llama, tmp_path):
    """The donor control gives the same records at any batch size (batch 1 included) and after a resume."""
    runs = {}
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}"
        run_eval(_cfg(out, method="donor", batch_size=bs, limit=4), backbone=llama)
        runs[bs] = [(r["id"], r["output"]) for r in read_samples(out / "samples.jsonl")]
    assert runs[1] == runs[3]
    resumed = tmp_path / "resumed"
    run_eval(_cfg(resumed, method="donor", batch_size=3, limit=3), backbone=llama)
    run_eval(
        _cfg(resumed, method="donor", batch_size=3, limit=4), backbone=llama
    )  # one item left: a batch of 1
    assert [(r["id"], r["output"]) for r in read_samples(resumed / "samples.jsonl")] == runs[3]
    latent = tmp_path / "latent"
    run_eval(_cfg(latent, method="latent_mas", batch_size=3, limit=4), backbone=llama)
    assert runs[3] != [(r["id"], r["output"]) for r in read_samples(latent / "samples.jsonl")]


def test_an_adapter_is_evaluated_in_the_channel_it_was_trained_in(llama, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "diffmas_adapter.json").write_text(json.dumps({"method": "diffmas", "channel": "latents"}))
    with pytest.raises(ValueError, match="trained with channel 'latents' but the evaluation asks for 'full'"):
        run_eval(_cfg(tmp_path / "out", adapter=str(adapter)), backbone=llama)
