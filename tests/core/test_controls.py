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
