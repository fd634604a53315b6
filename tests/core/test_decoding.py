"""Decoding from a trace: stop patterns end a sample where its answer is complete, batched as one at a time."""

from __future__ import annotations

import pytest
import torch

from diffmas.decoding import DecodeConfig, decode
from diffmas.methods import MethodConfig, get_method
from diffmas.tasks.base import ANSWER_STOPS


def _decode(backbone, prompts, config):
    from diffmas.trace import LatentTrace

    trace = LatentTrace(backbone.model, len(prompts))
    with torch.no_grad():
        return decode(trace, prompts, "solver", backbone.tokenizer, config, stop_ids=set())


def test_stop_pattern_cuts_at_the_first_match_and_keeps_batch_invariance(llama):
    tok = llama.tokenizer
    prompts = [tok.encode(q) for q in ("two plus two", "a longer question about apples and pears", "x")]
    free = _decode(llama, prompts, DecodeConfig(max_new_tokens=12))
    pattern = r"[\s\S]{6}"  # at least six characters of text
    cut = _decode(llama, prompts, DecodeConfig(max_new_tokens=12, stop_pattern=pattern))
    for whole, short, prompt in zip(free, cut, prompts):
        n = len(short.token_ids)
        assert short.token_ids == whole.token_ids[:n]  # same tokens up to the stop
        assert short.matched and not short.stopped
        assert len(tok.decode(short.token_ids, skip_special_tokens=True)) >= 6
        assert (
            len(tok.decode(short.token_ids[:-1], skip_special_tokens=True)) < 6
        )  # the first match, not later
        alone = _decode(llama, [prompt], DecodeConfig(max_new_tokens=12, stop_pattern=pattern))[0]
        assert alone.token_ids == short.token_ids


def test_code_answers_stop_after_the_closed_block():
    import re

    stop = re.compile(ANSWER_STOPS["code"])
    assert stop.search("```python\ndef f():\n    return 1\n```")
    assert not stop.search("```python\ndef f():\n    return 1\n")  # still open
    assert not stop.search("Here is the code: ```python")


def test_bad_stop_pattern_is_a_clear_error():
    with pytest.raises(ValueError, match="not a valid regex"):
        DecodeConfig(stop_pattern="(")
    with pytest.raises(ValueError, match="not a valid regex"):
        MethodConfig(answer_stop="[")


def test_answer_stop_reaches_the_solver_only(llama, questions):
    method = get_method("latent_mas", llama, config=MethodConfig(latent_steps=1, answer_stop="x"))
    from diffmas.thinking import stop_after_thinking

    assert method.config.solver_decoding.stop_pattern == stop_after_thinking("x")  # after any think block
    assert method.config.upstream_decoding.stop_pattern is None


def test_finished_rows_leave_the_batch_and_report_their_own_trace_length(llama):
    """Rows that stop early drop out of the trace; each answer's trace_len is what decoding it alone gives."""
    from diffmas.trace import LatentTrace

    tok = llama.tokenizer
    prompts = [tok.encode(q) for q in ("two plus two", "a longer question about apples", "x")]
    config = DecodeConfig(max_new_tokens=12, stop_pattern=r"[\s\S]{6}")
    trace = LatentTrace(llama.model, len(prompts))
    with torch.no_grad():
        batched = decode(trace, prompts, "solver", tok, config, stop_ids=set())
    lengths = {len(d.token_ids) for d in batched}
    assert len(lengths) > 1  # the rows finish at different steps, so some left early
    assert trace.batch_size < len(prompts)
    for d, prompt in zip(batched, prompts):
        assert d.trace_len == len(prompt) + len(d.token_ids) - 1  # the last token is never fed back
        alone = _decode(llama, [prompt], config)[0]
        assert alone.token_ids == d.token_ids and alone.trace_len == d.trace_len


class _CountingTokenizer:
    """The tiny tokenizer, recording how many tokens each `decode` call was given."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.calls: list[int] = []

    def decode(self, ids, **kwargs):
        self.calls.append(len(ids))
        return self._tok.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_incremental_text_equals_the_full_decode():
    from diffmas.decoding import IncrementalText
    from diffmas.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    text = "héllo wörld → 世界 ✓ ```python\ndef f():\n    return 1\n``` done 🙂 1,000"
    ids = tok.encode(text)
    inc = IncrementalText(tok)
    for i in ids:
        inc.add(i)
    assert inc.text == tok.decode(ids, skip_special_tokens=True) == text


def test_stop_check_decodes_a_constant_number_of_tokens_per_step(llama):
    """The stop pattern used to re-decode the whole answer at every step (O(n^2) per answer)."""
    from diffmas.trace import LatentTrace

    counting = _CountingTokenizer(llama.tokenizer)
    config = DecodeConfig(max_new_tokens=40, stop_pattern=r"never-matches-\d{9}")
    trace = LatentTrace(llama.model, 2)
    with torch.no_grad():
        out = decode(trace, [[5, 6, 7], [8, 9]], "solver", counting, config, stop_ids=set())
    assert all(len(d.token_ids) == 40 for d in out)
    per_step = counting.calls[: -len(out)]  # the final full decode of each answer comes once, at the end
    assert len(per_step) <= 2 * 2 * 40  # O(1) decode calls per row and step
    assert max(per_step) <= 12  # 2 x IncrementalText.MAX_PENDING: a bounded window, not the answer so far
