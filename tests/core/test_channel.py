"""Channel modes: in `latents` mode a reader sees other roles only through their latent columns."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, build_latent_trace, get_method
from diffmas.roles import RoleChain
from diffmas.testing import first_latent_grad
from diffmas.trace import LatentTrace

FMT = "Give the final answer in \\boxed{}."


def _method(backbone, channel, **kw):
    cfg = MethodConfig(latent_steps=3, max_new_tokens=5, channel=channel, **kw)
    return get_method("latent_mas", backbone, config=cfg)


def test_unknown_channel_is_an_error(llama):
    with pytest.raises(ValueError, match="channel must be one of"):
        LatentTrace(llama.model, 1, channel="text")
    with pytest.raises(ValueError, match="channel must be one of"):
        MethodConfig(channel="everything")


def test_latents_mode_masks_other_roles_prompts_only(llama, questions):
    method = _method(llama, "latents")
    with torch.no_grad():
        trace, _ = build_latent_trace(method, questions, FMT)
    full = trace.attention_mask
    for reader in ("critic", "solver"):
        visible = trace.visible_mask(reader)
        for seg in trace.segments:
            cols = slice(seg.start, seg.end)
            if seg.kind == "latent" or seg.role == reader:
                assert torch.equal(visible[:, cols], full[:, cols]), (reader, seg)
            else:
                assert visible[:, cols].sum() == 0, (reader, seg)
    # the trace itself keeps every real column: lengths and positions do not depend on the mode
    with torch.no_grad():
        full_trace, _ = build_latent_trace(_method(llama, "full"), questions, FMT)
    assert torch.equal(trace.attention_mask, full_trace.attention_mask)
    assert torch.equal(trace.next_positions, full_trace.next_positions)


def _solver_logits_with_transplanted_latents(backbone, channel):
    """Solver logits after an upstream prompt changed while its latent columns were held fixed."""
    method = _method(backbone, channel)
    chain = method.roles
    planner = chain.upstream[0]
    q = ["What is 12 + 30?"]
    other = ["What is 45 + 17?"]  # a different planner prompt of the same token length
    a_ids = method.encode(planner, q, FMT)
    b_ids = method.encode(planner, other, FMT)
    assert len(a_ids[0]) == len(b_ids[0]) and a_ids != b_ids
    logits = []
    with torch.no_grad():
        reference = method.new_trace(1)
        reference.append_tokens(a_ids, planner.name)
        start = reference.width
        reference.latent_steps(3, method.realigner, planner.name)
        end = reference.width
        for ids in (a_ids, b_ids):
            trace = method.new_trace(1)
            trace.append_tokens(ids, planner.name)
            trace.latent_steps(3, method.realigner, planner.name)
            # the same latent KV columns in both traces
            trace.transplant_from(reference, start, start, end - start)
            hidden = trace.append_tokens(method.encode(chain.solver, q, FMT), chain.solver.name)
            logits.append(trace.logits(hidden[:, -1]))
    return logits


def test_latents_mode_solver_ignores_upstream_prompt_tokens(backbone):
    """The acceptance test of the channel: with latents held fixed, changing the upstream prompt's tokens leaves
    the Solver's output unchanged in `latents` mode and changes it in `full` mode (so the test can fail)."""
    same = _solver_logits_with_transplanted_latents(backbone, "latents")
    torch.testing.assert_close(same[0], same[1], atol=1e-6, rtol=0)
    differ = _solver_logits_with_transplanted_latents(backbone, "full")
    assert (differ[0] - differ[1]).abs().max() > 1e-4


def test_latents_mode_still_carries_the_latents(llama):
    """Without transplanting, the upstream prompt reaches the Solver through the latent columns."""
    method = _method(llama, "latents")
    with torch.no_grad():
        a = method.run(["What is 12 + 30?"], FMT)[0].answer.logprobs
        b = method.run(["What is 45 + 17?"], FMT)[0].answer.logprobs
    assert a != b


def test_latents_mode_gradient_reaches_the_first_latent_step(qwen2, questions):
    """The Solver reads the Planner only through its latents, and the gradient takes that route back."""
    grad = first_latent_grad(_method(qwen2, "latents"), questions, FMT)
    assert grad is not None and grad.abs().sum() > 0


def test_checkpointed_latents_mode_matches_plain(llama, questions):
    cfg = MethodConfig(latent_steps=2, max_new_tokens=4, channel="latents")
    plain = get_method("latent_mas", llama, config=cfg)
    ckpt = get_method("latent_mas", llama, config=cfg, checkpoint=True)
    with torch.no_grad():
        a = plain.run(questions, FMT)
        b = ckpt.run(questions, FMT)
    assert [x.answer.token_ids for x in a] == [x.answer.token_ids for x in b]


def test_text_roles_file_works_in_latents_mode(llama):
    chain = RoleChain.from_mapping(
        {"roles": [{"name": "a", "template": "A {question}"}, {"name": "s", "template": "S {question}"}]}
    )
    method = get_method(
        "latent_mas", llama, chain, MethodConfig(latent_steps=1, max_new_tokens=2, channel="latents")
    )
    with torch.no_grad():
        out = method.run(["hi"], FMT)
    assert out[0].trace_len > 0
