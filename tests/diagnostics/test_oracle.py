"""The oracle channel: a writer's latent columns are exactly what the writer computes on the answer's tokens."""

from __future__ import annotations

import pytest
import torch

from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.diagnostics.oracle import (
    OracleLatentMAS,
    OracleRealigner,
    answer_slots,
    answers_of,
    oracle_config,
    plumbing_gap,
    train_oracle,
)
from diffmas.methods import build_latent_trace
from diffmas.testing import tiny_backbone


def _oracle(backbone, agents: int, steps: int = 2):
    task = load_task("secret", agents)
    items = task.load("test")[:3]
    base = make_method(backbone, chain_for(agents), task, Setting(latent_steps=steps))
    method = OracleLatentMAS(backbone, base.roles, base.config, answers=answers_of(task, task.load("test")))
    return method, task, items


@pytest.mark.parametrize("agents", [2, 4])
def test_oracle_columns_are_the_answer_tokens_kv(backbone, agents):
    method, task, items = _oracle(backbone, agents, steps=3)
    assert plumbing_gap(method, task, items) < 1e-5


def test_plumbing_gap_sees_a_different_feed(llama):
    """The check can fail: an oracle fed the wrong item's answers differs from the reference by far."""
    method, task, items = _oracle(llama, 2)
    swapped = dict(method.answers)
    for a, b in zip(items, items[1:] + items[:1]):
        swapped[(task.render_question(a), tuple(a.views))] = b.answer
    assert any(a.answer != b.answer for a, b in zip(items, items[1:]))
    method.answers = swapped  # the oracle feeds another item's answer; the reference appends the true one
    assert plumbing_gap(method, task, items) > 1e-3


def test_oracle_latents_differ_from_the_realigned_ones(llama):
    """The oracle replaces the realigned hidden state: its latent columns are not latent_mas's."""
    method, task, items = _oracle(llama, 2)
    plain = make_method(llama, method.roles, task, Setting())
    q = [task.render_question(it) for it in items]
    v = [it.views for it in items]
    with torch.no_grad():
        a, ma = method.build_trace(q, task.format_instruction, v)
        b, _ = build_latent_trace(plain, q, task.format_instruction, views=v)
    ka = a.column_states(ma[0].start, ma[0].end)[-1][0]
    kb = b.column_states(ma[0].start, ma[0].end)[-1][0]
    assert (ka - kb).abs().max() > 1e-3


def test_answer_slots_and_realigner_checks(llama):
    tok = llama.tokenizer
    ids = tok("maple", add_special_tokens=False)["input_ids"]
    slots = answer_slots(tok, "maple", len(ids) + 2)
    assert slots[: len(ids)] == ids and slots[len(ids) :] == [ids[-1]] * 2
    r = OracleRealigner()
    with pytest.raises(RuntimeError, match="not been fed"):
        r(torch.zeros(1, 4))
    r.feed(torch.arange(12.0).view(1, 3, 4))
    assert [float(r(torch.zeros(1, 4))[0, 0]) for _ in range(4)] == [0.0, 4.0, 8.0, 0.0]
    with pytest.raises(ValueError, match="fed 1 rows"):
        r(torch.zeros(2, 4))


def test_oracle_without_answer_is_an_error(llama):
    method, task, items = _oracle(llama, 2)
    with pytest.raises(KeyError, match="no answer"):
        method.build_trace(["an unseen question"], task.format_instruction, [("x", "")])


def test_train_oracle_runs_the_trainer_and_reports_chance(tmp_path):
    """Training plumbing on the tiny model (not the 95%: a random tiny model cannot read words): the Solver's
    adapter alone learns, the run reports accuracy before and after with the items' chance rate."""
    backbone = tiny_backbone("llama")
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    cfg = oracle_config(
        "secret", {"agents": 2}, "comm2", model="tiny", out=tmp_path / "run", steps=2, batch_size=2,
        n_train=8, n_eval=4, max_new_tokens=4,
    )  # fmt: skip
    result = train_oracle(cfg, backbone=backbone)
    assert result["n"] == 4 and result["chance"] == pytest.approx(1 / 8)
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["accuracy_before"] <= 1
    # the base model is handed back as it came
    for n, p in backbone.model.named_parameters():
        assert torch.equal(p, before[n]), n
    manifest = (tmp_path / "run" / "adapter" / "diffmas_adapter.json").read_text()
    assert '"per_role"' in manifest and '"grad_mode": "solver"' in manifest
