"""Thinking models (Qwen3, R1 distills): the answer is what follows the `<think>...</think>` block.

A thinking model drafts inside the block, often closing a code block or writing `\\boxed{}` there before it is
done. So the Solver's answer stop only fires after `</think>`, and grading reads only the text after it; a sample
that opened a block and never closed it has no answer (it ran out of budget while thinking). Text without a
`<think>` tag (a model that does not think, or Qwen3 with `enable_thinking: false`, whose template writes the empty
block into the prompt) is the answer as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def answer_text(text: str) -> str:
    """The part of a generated text that is graded: after the think block, "" while the block is open."""
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1].lstrip()
    return "" if THINK_OPEN in text else text


def stop_after_thinking(pattern: str | None, opened: bool = False) -> str | None:
    """`pattern` made to match only in the answer: in a text with no `<think>` anywhere, or after `</think>`.
    `opened`: the prompt itself opened the block (R1 distills' template ends with `<think>`), so only after
    `</think>`. Anchored at the start (`\\A`), so each search tries one position, not every one."""
    if pattern is None:
        return None
    if opened:
        return rf"\A[\s\S]*?{THINK_CLOSE}[\s\S]*?(?:{pattern})"
    return rf"\A(?:(?![\s\S]*?{THINK_OPEN})|[\s\S]*?{THINK_CLOSE})[\s\S]*?(?:{pattern})"


def prompt_opens_thinking(tokenizer, prompt_ids) -> bool:
    """Whether a generation prompt ends inside an open think block (its last tokens end with `<think>`)."""
    tail = tokenizer.decode(list(prompt_ids)[-8:], skip_special_tokens=False)
    return tail.rstrip().endswith(THINK_OPEN)


def thinks(chat_template_kwargs: Mapping[str, Any]) -> bool:
    """Whether prompts ask the model to think: only an explicit `enable_thinking: true` says so (Qwen3's template
    thinks by default, so a Qwen3 config should say which it wants)."""
    return chat_template_kwargs.get("enable_thinking") is True


def thinking_target(reasoning: str, answer: str) -> str:
    """A reference target in a thinking turn's shape: the worked solution inside the block, the answer after
    (no solution: the empty block Qwen3's template writes for a turn without thinking)."""
    body = reasoning.strip()
    return (
        f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n\n{answer}"
        if body
        else f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n{answer}"
    )
