"""The latent donor: the transplant moves exactly the latent columns, and the Solver's answer depends on them."""

from __future__ import annotations

import pytest
import torch

from diffmas.diagnostics.common import Setting, chain_for, load_task, make_method
from diffmas.diagnostics.donor import donor_batches, latent_donor, solver_answers
from diffmas.methods import build_latent_trace


def test_transplant_rows_moves_exactly_the_columns(llama):
    task = load_task("secret", 4)
    method = make_method(llama, chain_for(4), task, Setting(latent_steps=2))
    items = task.load("test")[:3]
    q, v = [task.render_question(it) for it in items], [it.views for it in items]
    with torch.no_grad():
        a, messages = build_latent_trace(method, q, task.format_instruction, views=v)
        before = [(k.clone(), val.clone()) for k, val in a.column_states(0, a.width)]
        m = messages[1]
        a.transplant_rows(m.start, m.end, [2, 0, 1])
    after = a.column_states(0, a.width)
    for (k0, v0), (k1, v1) in zip(before, after):
        for old, new in ((k0, k1), (v0, v1)):
            torch.testing.assert_close(new[:, :, m.start : m.end], old[[2, 0, 1], :, m.start : m.end])
            outside = torch.ones(a.width, dtype=torch.bool)
            outside[m.start : m.end] = False
            assert torch.equal(new[:, :, outside], old[:, :, outside])
    with pytest.raises(RuntimeError, match="no_grad"):
        a.transplant_rows(m.start, m.end, [0, 1, 2])
    with torch.no_grad(), pytest.raises(ValueError, match="out of range"):
        a.transplant_rows(m.start, m.end, [0, 1, 5])


@pytest.mark.parametrize("channel", ["latents", "full"])
def test_identity_transplant_changes_nothing_and_a_donor_does(llama, channel):
    task = load_task("secret", 2)
    method = make_method(
        llama, chain_for(2), task, Setting(channel=channel, latent_steps=2, max_new_tokens=6)
    )
    items = task.load("test")[:4]
    own = solver_answers(method, task, items)
    assert solver_answers(method, task, items, [0, 1, 2, 3]) == own
    # the last item read the first one's latents: in the latents channel they are all it has of the writer
    swapped = solver_answers(method, task, items, [0, 1, 2, 0])
    assert swapped[:3] == own[:3]
    logits_differ = []
    for donors in ([0, 1, 2, 3], [1, 0, 3, 2]):
        q, v = [task.render_question(it) for it in items], [it.views for it in items]
        with torch.no_grad():
            trace, messages = build_latent_trace(method, q, task.format_instruction, views=v)
            for m in messages:
                trace.transplant_rows(m.start, m.end, donors)
            hidden = trace.append_tokens(
                method.encode(method.roles.solver, q, task.format_instruction, views=v), "solver"
            )
            logits_differ.append(trace.logits(hidden[:, -1]))
    assert (logits_differ[0] - logits_differ[1]).abs().max() > 1e-4


def test_latent_donor_pairs_every_item(llama):
    task = load_task("secret", 2)
    method = make_method(llama, chain_for(2), task, Setting(latent_steps=1, max_new_tokens=4))
    items = task.load("test")[:5]
    result = latent_donor(method, task, items, batch_size=2)
    assert len(result.real) == len(result.transplanted) == len(result.follows_donor) == 5
    assert all(d != i for i, d in enumerate(result.donors))  # nobody is its own donor
    assert result.test.n == 5 and 0 <= result.test.p_value <= 1
    assert result.chance == pytest.approx(1 / 8)


def test_donor_batches_never_leave_one_alone():
    assert [list(r) for r in donor_batches(5, 2)] == [[0, 1], [2, 3, 4]]
    assert [list(r) for r in donor_batches(4, 8)] == [[0, 1, 2, 3]]
    assert [list(r) for r in donor_batches(3, 1)] == [[0, 1, 2]]
    with pytest.raises(ValueError, match="at least 2"):
        donor_batches(1, 4)
