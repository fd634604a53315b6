"""The controls every communication ladder carries: donor traces and the compute-matched single agent."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, build_latent_trace, derangement, get_method
from diffmas.testing import VIEW_QUESTIONS as QS
from diffmas.testing import VIEWS, view_chain

FMT = "Give the final answer in \\boxed{}."


@pytest.mark.parametrize("n", [2, 3, 5, 16])
def test_derangement_has_no_fixed_point_and_is_seeded(n):
    for seed in ("a", "b", "c"):
        order = derangement(n, seed)
        assert sorted(order) == list(range(n))
        assert all(order[i] != i for i in range(n))
        assert order == derangement(n, seed)
    with pytest.raises(ValueError, match="at least 2 questions"):
        derangement(1, "x")


def test_donor_reads_the_trace_of_another_question(llama, questions):
    """Donor output i equals the Solver of question i reading the upstream trace built for question order[i]."""
    cfg = MethodConfig(latent_steps=2, max_new_tokens=4)
    donor = get_method("donor", llama, config=cfg)
    latent = get_method("latent_mas", llama, config=cfg)
    order = donor.donors(questions)
    with torch.no_grad():
        got = donor.run(questions, FMT)
        trace, _ = build_latent_trace(latent, [questions[j] for j in order], FMT)
        expected = latent.decode_solver(trace, questions, FMT)
        real = latent.run(questions, FMT)
    assert [g.answer.token_ids for g in got] == [e.token_ids for e in expected]
    assert [g.answer.logprobs for g in got] != [r.answer.logprobs for r in real]


def test_donor_swaps_views_with_the_questions(llama):
    cfg = MethodConfig(latent_steps=2, max_new_tokens=3)
    chain = view_chain()
    donor = get_method("donor", llama, chain, cfg)
    assert donor.donors(QS) == [1, 0]
    latent = get_method("latent_mas", llama, chain, cfg)
    with torch.no_grad():
        got = donor.run(QS, FMT, views=VIEWS)
        trace, _ = build_latent_trace(latent, QS[::-1], FMT, views=VIEWS[::-1])
        expected = latent.decode_solver(trace, QS, FMT, views=VIEWS)
    assert [g.answer.token_ids for g in got] == [e.token_ids for e in expected]


def test_donor_refuses_a_batch_of_one(llama):
    with pytest.raises(ValueError, match="at least 2 questions"):
        get_method("donor", llama, config=MethodConfig(latent_steps=1)).run(["q"], FMT)


def test_single_latent_takes_the_chains_latent_steps_alone(llama, questions):
    m = 3
    method = get_method("single_latent", llama, config=MethodConfig(latent_steps=m, max_new_tokens=3))
    upstream = 3  # the default chain: planner, critic, refiner
    with torch.no_grad():
        trace, messages = method.build_trace(questions, FMT)
    assert [(s.role, s.kind) for s in trace.segments] == [("thinker", "prompt"), ("thinker", "latent")]
    assert messages[0].steps == m * upstream
    latent_cols = [s for s in trace.segments if s.kind == "latent"][0]
    assert latent_cols.lengths == (m * upstream,) * len(questions)
    # the thinker reads the Solver's own prompt: the chain's compute, without the chain
    assert method.encode(method.roles.upstream[0], questions, FMT) == method.encode(
        method.roles.solver, questions, FMT
    )


def test_latent_donor_keeps_its_prompts_and_reads_the_donors_latents(llama):
    """Row i's answer is the Solver of question i reading its own upstream prompts with the latent columns its
    donor's writers wrote; a batch equals each question alone with its donor."""
    cfg = MethodConfig(latent_steps=2, max_new_tokens=3)
    chain = view_chain()
    method = get_method("latent_donor", llama, chain, cfg)
    latent = get_method("latent_mas", llama, chain, cfg)
    assert method.rows_per_question == 2
    with torch.no_grad():
        got = method.run(QS, FMT, views=VIEWS)
        # the same in one trace of both batches: row i's latent columns copied from row 2 + i (its donor)
        trace, messages = build_latent_trace(latent, QS + QS[::-1], FMT, views=VIEWS + VIEWS[::-1])
        for m in messages:
            trace.transplant_rows(m.start, m.end, [2, 3, 2, 3])
        expected = latent.decode_solver(trace, QS + QS[::-1], FMT, views=VIEWS + VIEWS[::-1])[:2]
        own = latent.run(QS, FMT, views=VIEWS)
        alone = [
            method.run([QS[i]], FMT, views=[VIEWS[i]], donors=([QS[1 - i]], [VIEWS[1 - i]]))[0]
            for i in range(2)
        ]
    assert [g.answer.token_ids for g in got] == [e.token_ids for e in expected]
    assert [a.answer.token_ids for a in alone] == [g.answer.token_ids for g in got]
    assert [g.answer.logprobs for g in got] != [o.answer.logprobs for o in own]


def test_latent_donor_with_no_latent_steps_is_the_real_trace(llama):
    """With m = 0 nothing is transplanted: the control must then answer as the chain does."""
    cfg = MethodConfig(latent_steps=0, max_new_tokens=3)
    chain = view_chain()
    with torch.no_grad():
        got = get_method("latent_donor", llama, chain, cfg).run(QS, FMT, views=VIEWS)
        own = get_method("latent_mas", llama, chain, cfg).run(QS, FMT, views=VIEWS)
    assert [g.answer.token_ids for g in got] == [o.answer.token_ids for o in own]
