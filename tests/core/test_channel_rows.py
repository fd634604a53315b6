"""What training may narrow or widen in the `latents` channel: per-row visibility (the channel curriculum), the
item-independent prompt prefix shown to readers, and the layer a latent step is taken from."""

from __future__ import annotations

import pytest
import torch

from diffmas.methods import MethodConfig, build_latent_trace, get_method
from diffmas.realign import build_realigner
from diffmas.trace import LatentTrace

FMT = "Give the final answer in \\boxed{}."
VIEW_ITEMS = [
    ("What is the word?", ("The word is red.", "", "", "")),
    ("Which word was said?", ("The word is blue and long.", "", "", "")),
    ("What is the word?", ("The word is green.", "", "", "")),
]


def _method(backbone, channel="latents", **kw):
    config = MethodConfig(latent_steps=2, max_new_tokens=4, channel=channel, **kw)
    from diffmas.roles import RoleChain

    return get_method("latent_mas", backbone, RoleChain.load("comm"), config)


def _solver_hidden(method, questions, views, visible_rows=None) -> torch.Tensor:
    """The Solver prompt's hidden states after the trace, one [L, d] per row (its real tokens only)."""
    method.visible_rows = None if visible_rows is None else torch.tensor(visible_rows)
    try:
        trace, _ = build_latent_trace(method, questions, FMT, views=views)
    finally:
        method.visible_rows = None
    prompts = method.encode(method.roles.solver, questions, FMT, views=views)
    hidden = trace.append_tokens(prompts, method.roles.solver.name)
    return [hidden[i, hidden.shape[1] - len(p) :] for i, p in enumerate(prompts)]


def test_mixed_visible_rows_equal_each_row_alone_in_its_channel(backbone):
    """A batch whose rows read different channels computes what each row alone computes in its own channel."""
    questions = [q for q, _ in VIEW_ITEMS]
    views = [v for _, v in VIEW_ITEMS]
    rows = [True, False, True]
    with torch.no_grad():
        mixed = _solver_hidden(_method(backbone), questions, views, rows)
        for i, full in enumerate(rows):
            alone = _solver_hidden(
                _method(backbone, "full" if full else "latents"), [questions[i]], [views[i]]
            )
            other = _solver_hidden(
                _method(backbone, "latents" if full else "full"), [questions[i]], [views[i]]
            )
            torch.testing.assert_close(mixed[i], alone[0], atol=1e-5, rtol=1e-4)
            assert not torch.allclose(mixed[i], other[0], atol=1e-3), "the two channels must differ here"


def test_visible_rows_follow_kept_rows(llama):
    method = _method(llama)
    questions = [q for q, _ in VIEW_ITEMS]
    views = [v for _, v in VIEW_ITEMS]
    method.visible_rows = torch.tensor([True, False, True])
    with torch.no_grad():
        trace, _ = build_latent_trace(method, questions, FMT, views=views)
    trace.keep_rows([1, 2])
    assert trace.visible_rows.tolist() == [False, True]
    solver_view = trace.visible_mask("solver")
    assert torch.equal(solver_view[1], trace.attention_mask[1])  # the full row reads every real column
    assert solver_view[0].sum() < trace.attention_mask[0].sum()


def test_visible_rows_of_the_wrong_size_are_refused(llama):
    with pytest.raises(ValueError, match="visible_rows has 2 rows"):
        LatentTrace(llama.model, 3, channel="latents", visible_rows=[True, False])


def test_shown_prefix_is_the_same_tokens_for_every_item(backbone):
    """The prefix a reader sees of another role's prompt holds no item information: its tokens are identical for
    every item, and the first writer's prefix columns have identical keys across items."""
    questions = [q for q, _ in VIEW_ITEMS]
    views = [v for _, v in VIEW_ITEMS]
    method = _method(backbone, show_prefix=True)
    with torch.no_grad():
        trace, _ = build_latent_trace(method, questions, FMT, views=views)
    prompts = [method.encode(role, questions, FMT, views=views) for role in method.roles.upstream]
    shown_any = False
    solver_view = trace.visible_mask("solver")
    for seg, rows in zip([s for s in trace.segments if s.kind == "prompt"], prompts):
        assert seg.prefix is not None and all(k > 0 for k in seg.prefix)
        shown = {tuple(row[:k]) for row, k in zip(rows, seg.prefix)}
        assert len(shown) == 1, f"{seg.role}'s shown prefix differs across items"
        for i, (n, k) in enumerate(zip(seg.lengths, seg.prefix)):
            cols = solver_view[i, seg.start : seg.end]
            assert cols.sum() == k  # exactly the prefix columns of the hidden prompt are readable
            assert cols[seg.width - n : seg.width - n + k].all()
            shown_any = True
        # the item text itself is never shown: each row's prompt differs from the others after its prefix
        assert all(len(r) > k for r, k in zip(rows, seg.prefix))
    assert shown_any
    first = trace.segments[0]
    for layer in trace.cache.layers:
        keys = [layer.keys[i, :, first.end - n : first.end - n + k] for i, (n, k) in
                enumerate(zip(first.lengths, first.prefix))]  # fmt: skip
        for other in keys[1:]:
            torch.testing.assert_close(other, keys[0], atol=1e-5, rtol=1e-4)
    # without the option nothing of the hidden prompts is readable
    plain = _method(backbone)
    with torch.no_grad():
        hidden, _ = build_latent_trace(plain, questions, FMT, views=views)
    view = hidden.visible_mask("solver")
    for seg in [s for s in hidden.segments if s.kind == "prompt"]:
        assert view[:, seg.start : seg.end].sum() == 0


def test_shown_prefix_keeps_batch_equal_to_one_at_a_time(llama):
    questions = [q for q, _ in VIEW_ITEMS]
    views = [v for _, v in VIEW_ITEMS]
    with torch.no_grad():
        batched = _solver_hidden(_method(llama, show_prefix=True), questions, views)
        for i in range(len(questions)):
            alone = _solver_hidden(_method(llama, show_prefix=True), [questions[i]], [views[i]])
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-4)
        without = _solver_hidden(_method(llama), questions[:1], views[:1])
    assert not torch.allclose(batched[0], without[0], atol=1e-3)  # the prefix is read


def test_latent_from_a_middle_layer_feeds_that_layers_state(backbone):
    """With `latent_layer`, a latent step's input is the realigned hidden state after that block."""
    realigner = build_realigner("norm", backbone.model)
    prompt = [[5, 6, 7, 8]]
    with torch.no_grad():
        trace = LatentTrace(backbone.model, 1, latent_layer=1)
        trace.append_tokens(prompt, "p")
        trace.latent_steps(1, realigner, "p")
        manual = LatentTrace(backbone.model, 1)
        manual.append_tokens(prompt, "p", layers=(1,))
        embed = realigner(manual.layer_states[0][:, -1])
        manual.append_embeds(embed.unsqueeze(1), "p", "latent")
        final = LatentTrace(backbone.model, 1, latent_layer=-1)
        final.append_tokens(prompt, "p")
        final.latent_steps(1, realigner, "p")
        default = LatentTrace(backbone.model, 1)
        default.append_tokens(prompt, "p")
        default.latent_steps(1, realigner, "p")
    for a, b, c, d in zip(trace.cache.layers, manual.cache.layers, final.cache.layers, default.cache.layers):
        torch.testing.assert_close(a.keys, b.keys)
        torch.testing.assert_close(c.keys, d.keys)  # -1: the final (normed) state, as by default
    assert not torch.allclose(
        trace.cache.layers[-1].keys[..., -1, :], default.cache.layers[-1].keys[..., -1, :]
    )
    with pytest.raises(ValueError, match="latent_layer 9 is out of range"):
        LatentTrace(backbone.model, 1, latent_layer=9)


def test_layer_states_under_checkpointing_equal_plain(llama):
    for p in llama.model.parameters():
        p.requires_grad_(True)
    try:
        got = []
        for checkpoint in (False, True):
            trace = LatentTrace(llama.model, 2, checkpoint=checkpoint)
            trace.append_tokens([[5, 6, 7], [8, 9]], "p")
            hidden = trace.append_tokens([[10, 11], [12, 13, 14]], "s", "answer", layers=(0, 1, -1))
            assert len(trace.layer_states) == 3
            torch.testing.assert_close(trace.layer_states[-1], hidden)
            got.append([s.detach() for s in trace.layer_states])
            trace.layer_states[1].sum().backward()  # a graph through the chosen layer
        for a, b in zip(*got):
            torch.testing.assert_close(a, b)
    finally:
        for p in llama.model.parameters():
            p.requires_grad_(False)
