"""Multiple-choice and yes/no answers.

A model names an option in many ways: `\\boxed{B}`, `(B)`, `B.`, `B)`, "the answer is B", "Answer: B",
or by restating the option text. We look for the most explicit signal first and take the last one found,
because models often discuss several options before concluding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from diffmas.grading.extract import answer_phrase, last_boxed, strip_thinking
from diffmas.items import option_letters


def _norm_text(s: str) -> str:
    s = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", s)
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def _letter_in(fragment: str, letters: str) -> str | None:
    """A lone option letter leading a short fragment: `B`, `(B)`, `B.`, `B)`, `[B]`, `**B**`, `B: text`,
    `Option B`. A capital letter starting a word ("A bird") is not a letter answer."""
    f = fragment.strip().strip("*`'\" ")
    f = re.sub(r"^\\text\s*\{([^{}]*)\}$", r"\1", f).strip()
    f = re.sub(r"^(?:option|choice|answer)\s*:?\s*", "", f, flags=re.I).strip("*` ")
    m = re.match(rf"^(?:\(([{letters}])\)|\[([{letters}])\]|([{letters}])(?:[).:](?:\s|$)|$))", f)
    if m:
        return next(g for g in m.groups() if g)
    return None


def _text_match(fragment: str, choices: Sequence[str]) -> str | None:
    """The letter of the option whose full text equals the fragment, or, failing that, the one option
    whose text the fragment contains (ignoring options that are part of a longer contained option)."""
    frag = _norm_text(fragment)
    if not frag:
        return None
    letters = option_letters(len(choices))
    normed = [_norm_text(c) for c in choices]
    exact = [i for i, c in enumerate(normed) if c and c == frag]
    if len(exact) == 1:
        return letters[exact[0]]
    contained = [i for i, c in enumerate(normed) if len(c) >= 2 and re.search(rf"\b{re.escape(c)}\b", frag)]
    maximal = [i for i in contained if not any(j != i and normed[i] in normed[j] for j in contained)]
    if len(maximal) == 1:
        return letters[maximal[0]]
    return None


def extract_choice(output: str, choices: Sequence[str] | None, n_options: int | None = None) -> str | None:
    """The option letter the output commits to, or None."""
    n = len(choices) if choices else (n_options or 4)
    letters = option_letters(n)
    text = strip_thinking(output)

    boxed = last_boxed(text)
    if boxed is not None:
        letter = _letter_in(boxed, letters)
        if letter is None and choices:
            letter = _text_match(boxed, choices)
        if letter:
            return letter

    # "the answer is B", "Answer: (C)", "the correct option is D" (the letter itself must be a capital)
    phrase_re = re.compile(
        r"(?i:\banswer|\b(?:correct|best|right)\s+(?:option|choice))\**\s*"
        r"(?i:is|would\s+be|should\s+be|:|=)\s*:?\s*\**\s*[(\[]?\**"
        rf"([{letters}])(?![\w'-])"
    )
    hits = list(phrase_re.finditer(text))
    if hits:
        return hits[-1].group(1)

    phrase = answer_phrase(text)
    if phrase is not None:
        letter = _letter_in(phrase, letters)
        if letter is None and choices:
            letter = _text_match(phrase.rstrip("."), choices)
        if letter:
            return letter

    # the last line alone: "B", "(B)", "B. Paris"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        last = lines[-1]
        letter = _letter_in(last, letters)
        if letter:
            return letter
        if choices:
            letter = _text_match(last.rstrip("."), choices)
            if letter:
                return letter

    # last parenthesised letter anywhere: "... so (C)"
    paren = re.findall(rf"\(([{letters}])\)", text)
    if paren:
        return paren[-1]
    return None


_YES = {"yes", "true", "correct", "y"}
_NO = {"no", "false", "incorrect", "n"}


def yesno_value(text: str | None) -> str | None:
    """`yes`/`no` for a short answer (yes/no/true/false, any case and markup), else None."""
    if text is None:
        return None
    t = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", text)
    words = re.findall(r"[a-z]+", t.lower())
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


def extract_yesno(output: str) -> str | None:
    """`yes`/`no` from boxed, an "answer is" phrase, or the last yes/no/true/false word in the output."""
    text = strip_thinking(output)
    boxed = last_boxed(text)
    if boxed is not None and yesno_value(boxed):
        return yesno_value(boxed)
    phrase = answer_phrase(text)
    if phrase is not None and yesno_value(phrase):
        return yesno_value(phrase)
    words = re.findall(r"\b(yes|no|true|false)\b", text, flags=re.I)
    if words:
        return yesno_value(words[-1])
    return None


__all__ = ["extract_choice", "extract_yesno", "yesno_value"]
