"""Sliding-window layers on tiny models with a window of 4: chunks wider than the window, with and
without checkpointing, give the model's own logits, and a padded batch equals each question alone."""

from __future__ import annotations

import pytest
import torch

from diffmas.testing import tiny_family
from diffmas.trace import LatentTrace, sliding_window_of

SLIDING = ("qwen3", "gemma3", "mistral")
WINDOW = 4


def _ids(n: int, start: int = 5) -> list[int]:
    return list(range(start, start + n))


@pytest.mark.parametrize("family", SLIDING)
@pytest.mark.parametrize("checkpoint", [False, True])
def test_wide_chunks_through_a_small_window_give_the_models_logits(family, checkpoint):
    model = tiny_family(family, sliding_window=WINDOW)
    assert sliding_window_of(model.config) == WINDOW
    first, second, third = _ids(10), _ids(7, start=40), _ids(2, start=60)
    trace = LatentTrace(model, 1, checkpoint=checkpoint)
    trace.append_tokens([first], "a")
    trace.append_tokens([second], "b")
    hidden = trace.append_tokens([third], "c")
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([first + second + third])).logits[0, -len(third) :]
    torch.testing.assert_close(trace.logits(hidden[0]).detach(), expected, atol=1e-4, rtol=1e-4)
    hidden.sum().backward()  # the checkpointed recomputation runs too


@pytest.mark.parametrize("family", SLIDING)
@pytest.mark.parametrize("checkpoint", [False, True])
def test_a_padded_batch_slides_like_each_question_alone(family, checkpoint):
    """Windows count real tokens, not pad columns: pads in the middle change nothing (checkpointed: with grad)."""
    model = tiny_family(family, sliding_window=WINDOW)
    firsts = [_ids(9), _ids(3, start=20), _ids(6, start=30)]
    seconds = [_ids(2, start=50), _ids(7, start=60), _ids(4, start=70)]
    with torch.set_grad_enabled(checkpoint):
        batch = LatentTrace(model, 3, checkpoint=checkpoint)
        batch.append_tokens(firsts, "a")
        batch.append_tokens(seconds, "b")
        for _ in range(3):
            batch.append_step(torch.tensor([8, 9, 10]), "b")
        for i in range(3):
            alone = LatentTrace(model, 1)
            alone.append_tokens([firsts[i]], "a")
            alone.append_tokens([seconds[i]], "b")
            for _ in range(3):
                alone.append_step(torch.tensor([8 + i]), "b")
            torch.testing.assert_close(batch.last_hidden[i], alone.last_hidden[0], atol=1e-4, rtol=1e-4)
            full = model(input_ids=torch.tensor([firsts[i] + seconds[i] + [8 + i] * 3])).logits[0, -1]
            torch.testing.assert_close(batch.logits(batch.last_hidden[i]), full, atol=1e-4, rtol=1e-4)
    if checkpoint:
        batch.last_hidden.sum().backward()
