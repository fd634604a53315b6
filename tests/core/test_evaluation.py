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


@pytest.mark.parametrize("method", ["donor", "latent_donor"])
def test_donor_pairing_is_drawn_over_the_split_not_the_batch(llama, tmp_path, method):
    """The donor controls give the same records at any batch size (batch 1 included) and after a resume."""
    runs = {}
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}"
        run_eval(_cfg(out, method=method, batch_size=bs, limit=4), backbone=llama)
        runs[bs] = [(r["id"], r["output"]) for r in read_samples(out / "samples.jsonl")]
    assert runs[1] == runs[3]
    resumed = tmp_path / "resumed"
    run_eval(_cfg(resumed, method=method, batch_size=3, limit=3), backbone=llama)
    run_eval(
        _cfg(resumed, method=method, batch_size=3, limit=4), backbone=llama
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


def test_resume_after_a_torn_row_keeps_complete_rows_and_counts_each_item_once(llama, tmp_path):
    """Killed mid-write: the rerun moves the fragment aside, redoes only that item, and n is the item count."""
    from diffmas.records import RecordRepairWarning

    # in split order, so the redone item is batched alone both times (a message's columns are the batch's)
    cfg = _cfg(tmp_path, limit=3, group_by_length=False)
    run_eval(cfg, backbone=llama)
    path = tmp_path / "samples.jsonl"
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:40])  # the third row torn
    with pytest.warns(RecordRepairWarning, match="torn last line"):
        summary = run_eval(cfg, backbone=llama)
    rows = read_samples(path)
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"] and summary["n"] == 3
    timeless = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == timeless  # as if never killed
    assert len(list(tmp_path.glob("samples.jsonl.torn-*"))) == 1
    run_eval(cfg, backbone=llama)  # and the next rerun reads the file cleanly


def test_a_second_eval_on_a_locked_out_dir_fails_clearly(llama, tmp_path):
    from diffmas.records import OutputDirError, locked_dir

    with locked_dir(tmp_path), pytest.raises(OutputDirError, match="in use by another run"):
        run_eval(_cfg(tmp_path, limit=2), backbone=llama)
    assert not (tmp_path / "samples.jsonl").exists()


def test_duplicate_rows_in_samples_are_counted_once(llama, tmp_path):
    from diffmas.records import RecordRepairWarning

    run_eval(_cfg(tmp_path, limit=2), backbone=llama)
    path = tmp_path / "samples.jsonl"
    path.write_bytes(path.read_bytes() * 2)  # what two unlocked writers used to leave
    with pytest.warns(RecordRepairWarning, match="2 duplicate rows"):
        summary = run_eval(_cfg(tmp_path, limit=2), backbone=llama)
    assert summary["n"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 2


def test_out_that_is_a_file_is_a_clean_error(llama, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    with pytest.raises(ValueError, match=r"--out.*is an existing file"):
        run_eval(_cfg(out, limit=1), backbone=llama)


def test_duplicate_ids_in_a_task_file_are_refused(llama, tmp_path):
    task = tmp_path / "dup.jsonl"
    task.write_text(
        '{"id": 1, "question": "q1", "answer": "1"}\n{"id": "2", "question": "q2", "answer": "2"}\n'
        '{"id": "1", "question": "q3", "answer": "3"}\n'
    )
    with pytest.raises(ValueError, match=r"dup\.jsonl:3: duplicate id '1', already used on line 1"):
        run_eval(_cfg(tmp_path / "out", task=str(task)), backbone=llama)


def test_a_question_past_the_context_length_warns(llama, tmp_path):
    from diffmas.evaluation import ContextLengthWarning

    task = tmp_path / "long.jsonl"
    long_question = "What is 12 + 30? " * 600  # ~4,000 tokens against the tiny model's 2,048 positions
    task.write_text(json.dumps({"id": "x", "question": long_question, "answer": "42"}) + "\n")
    with pytest.warns(ContextLengthWarning, match=r"context length of 2,048 tokens.*x \("):
        run_eval(_cfg(tmp_path / "out", task=str(task), max_new_tokens=1, latent_steps=0), backbone=llama)


def test_longest_first_orders_by_question_tokens_keeping_ties_and_counts_donors(llama):
    from dataclasses import replace

    from diffmas.evaluation import longest_first
    from diffmas.tasks import get_task

    task = get_task(str(ASSET))
    items = task.load("test")
    tokens = {
        it.id: len(llama.tokenizer(task.render_question(it), add_special_tokens=False)["input_ids"])
        for it in items
    }
    order = [it.id for it in longest_first(items, task, llama.tokenizer)]
    assert sorted(order) == sorted(tokens) and [tokens[i] for i in order] == sorted(
        tokens.values(), reverse=True
    )
    twins = [items[0], replace(items[0], id="twin")]
    assert [it.id for it in longest_first(twins, task, llama.tokenizer)] == [items[0].id, "twin"]  # stable
    # a donor's question counts too: the upstream agents of a donor trace read it
    donor_of = {it.id: items[(k + 1) % len(items)] for k, it in enumerate(items)}
    total = {it.id: tokens[it.id] + tokens[donor_of[it.id].id] for it in items}
    order = [it.id for it in longest_first(items, task, llama.tokenizer, donor_of)]
    assert order == sorted(total, key=lambda i: -total[i]) != sorted(tokens, key=lambda i: -tokens[i])


def test_grouped_batches_answer_alike_and_the_file_keeps_the_splits_order(llama, tmp_path, monkeypatch):
    """Batches of like length, longest first; the same record per item as split-order batches; samples.jsonl
    back in split order at the end; the switch is not part of the results key (a directory resumes across it)."""
    import diffmas.evaluation as evaluation

    seen: list[list[str]] = []
    real = evaluation.run_batch

    def spy(method, task, batch, *args, **kwargs):
        seen.append([it.id for it in batch])
        return real(method, task, batch, *args, **kwargs)

    monkeypatch.setattr(evaluation, "run_batch", spy)
    run_eval(_cfg(tmp_path / "grouped", batch_size=2), backbone=llama)
    grouped_batches, seen[:] = list(seen), []
    run_eval(_cfg(tmp_path / "split", batch_size=2, group_by_length=False), backbone=llama)
    assert seen == [["a1", "a2"], ["a3", "a4"], ["a5"]]
    questions = {r["id"]: r["question"] for r in read_samples(tmp_path / "split" / "samples.jsonl")}
    tokens = {i: len(llama.tokenizer(q, add_special_tokens=False)["input_ids"]) for i, q in questions.items()}
    flat = [i for b in grouped_batches for i in b]
    assert [tokens[i] for i in flat] == sorted(tokens.values(), reverse=True) and grouped_batches != seen

    def record(r):
        return {
            k: v for k, v in r.items() if k not in ("seconds", "messages")
        }  # messages: the batch's columns

    grouped = read_samples(tmp_path / "grouped" / "samples.jsonl")
    split = read_samples(tmp_path / "split" / "samples.jsonl")
    assert [r["id"] for r in grouped] == ["a1", "a2", "a3", "a4", "a5"]
    assert [record(r) for r in grouped] == [record(r) for r in split]
    seen[:] = []
    run_eval(_cfg(tmp_path / "split", batch_size=2, limit=5), backbone=llama)  # resumes: nothing to redo
    assert seen == []


def test_a_grouped_run_killed_midway_is_back_in_split_order_after_any_resume(llama, tmp_path, monkeypatch):
    """The reorder is not left to the call that grouped: a resume that answers one item, alone, still does it."""
    import diffmas.evaluation as evaluation

    real, calls = evaluation._eval_batch, []

    def killed_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_eval_batch", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_cfg(tmp_path, limit=3), backbone=llama)
    first = [r["id"] for r in read_samples(tmp_path / "samples.jsonl")]
    assert len(first) == 2 and "a1" not in first  # the longest two first: a1, the shortest, is left
    monkeypatch.setattr(evaluation, "_eval_batch", real)
    run_eval(_cfg(tmp_path, limit=3, batch_size=1), backbone=llama)  # one item left, batch 1: nothing grouped
    assert [r["id"] for r in read_samples(tmp_path / "samples.jsonl")] == ["a1", "a2", "a3"]


def test_the_batch_order_is_part_of_a_sampled_evaluations_key(llama, tmp_path):
    """Sampled answers draw their random stream batch by batch: a sampled directory does not resume across the
    switch (greedy ones do), and the refusal says why."""
    greedy = _cfg(tmp_path).results_key()
    assert greedy == _cfg(tmp_path, group_by_length=False).results_key()
    for sampling in ({"temperature": 0.7}, {"samples": 3}):
        assert (
            _cfg(tmp_path, **sampling).results_key()
            != _cfg(tmp_path, **sampling, group_by_length=False).results_key()
        )
    run_eval(_cfg(tmp_path, limit=2, temperature=0.7), backbone=llama)
    with pytest.raises(ValueError, match="sampled_longest_first.*group_by_length"):
        run_eval(_cfg(tmp_path, limit=3, temperature=0.7, group_by_length=False), backbone=llama)
