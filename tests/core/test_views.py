"""Per-agent views: each agent reads its own view; single agents read every view; tasks without views are
unchanged."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, get_method
from diffmas.roles import RoleChain, encode_prompt
from diffmas.testing import VIEW_QUESTIONS as QS
from diffmas.testing import VIEWS, view_chain

FMT = "Give the final answer in \\boxed{}."


def test_render_drops_an_empty_view_line():
    role = view_chain().roles[0]
    assert role.render("x", view="v") == "p.\nv\nQ: x"
    assert role.render("x") == "p.\nQ: x"


def test_packaged_chains_load_by_name(tmp_path):
    assert RoleChain.load(None) == RoleChain.default()
    comm = RoleChain.load("comm")
    assert all(r.takes_view for r in comm.roles)
    assert [r.name for r in comm.roles] == [r.name for r in RoleChain.default().roles]
    with pytest.raises(FileNotFoundError):
        RoleChain.load(tmp_path / "missing.yaml")


def test_each_agent_gets_its_own_view_and_single_gets_all(llama):
    chain = view_chain()
    latent = get_method("latent_mas", llama, chain)
    single = get_method("single", llama, chain)
    no_comm = get_method("no_comm", llama, chain)
    views = VIEWS[0]
    assert [latent.view_of(r, views) for r in chain.roles] == list(views)
    assert single.view_of(chain.solver, views) == "alpha is 7\nbeta is 2"
    assert no_comm.view_of(no_comm.roles.solver, views) == ""  # the Solver's own view, not the chain's others
    assert get_method("single_latent", llama, chain).view_of(chain.solver, views) == "alpha is 7\nbeta is 2"


def test_views_must_match_the_chain_and_need_a_placeholder(llama):
    method = get_method("latent_mas", llama, view_chain())
    with pytest.raises(ValueError, match="3 views but the role chain has 4 agents.*agents=4"):
        method.encode(method.roles.solver, ["q"], FMT, views=[("a", "b", "c")])
    plain = get_method("single", llama)  # the default chain has no {view}
    with pytest.raises(ValueError, match="no \\{view\\} placeholder"):
        plain.encode(plain.roles.solver, ["q"], FMT, views=[("a", "", "", "")])


def test_tasks_without_views_render_exactly_as_before(backbone, questions):
    """No views: prompts are the template formatted as always, and `views=None` equals not passing views."""
    method = get_method(
        "text_mas", backbone, config=MethodConfig(max_new_tokens=4, upstream_max_new_tokens=3)
    )
    for role in method.roles.roles:
        expected = [
            encode_prompt(
                backbone.tokenizer,
                role.template.replace("{context}\n", "").format(question=q, format=FMT).strip(),
                method.roles.system,
            )
            for q in questions
        ]
        assert method.encode(role, questions, FMT) == expected
        assert method.encode(role, questions, FMT, views=[None] * len(questions)) == expected
    with torch.no_grad():
        a = method.run(questions, FMT)
        b = method.run(questions, FMT, views=None)
    assert [x.answer.token_ids for x in a] == [x.answer.token_ids for x in b]


def _solver_logprobs(method, views):
    with torch.no_grad():
        return [o.answer.logprobs for o in method.run(QS, FMT, views=views)]


def test_an_upstream_view_reaches_the_solver_only_through_the_chain(llama):
    cfg = MethodConfig(latent_steps=2, max_new_tokens=3)
    changed = [("alpha is 9", *VIEWS[0][1:]), VIEWS[1]]
    chain = view_chain()
    latent = get_method("latent_mas", llama, chain, cfg)
    assert _solver_logprobs(latent, VIEWS)[0] != _solver_logprobs(latent, changed)[0]
    no_comm = get_method("no_comm", llama, chain, cfg)
    assert _solver_logprobs(no_comm, VIEWS) == _solver_logprobs(no_comm, changed)


# Batched with views equals one at a time: tests/core/test_method_contract.py, for every registered method.
