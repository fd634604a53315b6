"""Answer extraction from free model output: boxed answers, "the answer is" phrases, numbers, code blocks.

Pure string functions with no task knowledge; the graders combine them. Every extractor returns None when
it finds nothing, never raises.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_THINK_END = re.compile(r"</think>", re.I)


def strip_thinking(text: str) -> str:
    """The text after the last `</think>` (reasoning models put the final answer after it)."""
    parts = _THINK_END.split(text)
    return parts[-1] if len(parts) > 1 else text


def _balanced(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at `open_at`, honouring nesting and escaped braces (`\\{`)."""
    depth = 0
    i = open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def all_boxed(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` (nested braces kept whole), plus `\\boxed 5` forms."""
    found: list[tuple[int, str]] = []
    for cmd in _BOX_COMMANDS:
        start = 0
        while True:
            at = text.find(cmd, start)
            if at < 0:
                break
            j = at + len(cmd)
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                end = _balanced(text, j)
                if end is None:  # unclosed: take the rest, as a truncated generation would
                    found.append((at, text[j + 1 :].strip()))
                    break
                found.append((at, text[j + 1 : end].strip()))
                start = end + 1
            else:
                m = re.match(r" +([^\s$]+)", text[at + len(cmd) :])
                if m:
                    found.append((at, m.group(1)))
                start = at + len(cmd)
    return [s for _, s in sorted(found)]


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` with balanced (nested) braces, or None."""
    boxes = all_boxed(text)
    return boxes[-1] if boxes else None


_ANSWER_PHRASE = re.compile(r"\banswer\b\**\s*(?:is\b\s*:?|:|=)\s*(?P<ans>[^\n]+)", re.I)


def answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "final answer:" / "Answer:" on its line, trimmed of markup."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    for m in reversed(matches):
        ans = m.group("ans").strip()
        ans = re.sub(r"^(?:therefore|thus|so)\W+", "", ans, flags=re.I)
        ans = ans.strip(" *`").rstrip(".").strip()
        wrapped = re.fullmatch(r"\$+([^$]*)\$+", ans)
        if wrapped:
            ans = wrapped.group(1).strip()
        if ans:
            return ans
    return None


# A number: thousands groups only when every group after a comma has exactly 3 digits ("1,000" is one
# number, "1, 2" two numbers, "1,23" two numbers); optional sign, decimals, and a simple fraction a/b.
NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<num>[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|[-−]?\.\d+)(?![\d,]*\d)"
)


def numbers(text: str) -> list[str]:
    """All numbers in `text`, commas removed ("1,000" -> "1000"), unicode minus normalised."""
    out = []
    for m in NUMBER_RE.finditer(text):
        out.append(re.sub(r"\s+", "", m.group("num")).replace(",", "").replace("−", "-"))
    return out


def last_number(text: str) -> str | None:
    nums = numbers(text)
    return nums[-1] if nums else None


_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)(?:```|\Z)", re.S)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block; an unclosed final fence runs to the end of the text."""
    return [(m.group("lang").lower(), m.group("body")) for m in _FENCE.finditer(text)]


def last_python_block(text: str) -> str | None:
    """The last ```python block (or the last untagged block when none is tagged python)."""
    blocks = code_blocks(text)
    tagged = [b for lang, b in blocks if lang in {"python", "py", "python3"}]
    if tagged:
        return tagged[-1]
    untagged = [b for lang, b in blocks if not lang]
    return untagged[-1] if untagged else None


__all__ = [
    "NUMBER_RE",
    "all_boxed",
    "answer_phrase",
    "code_blocks",
    "last_boxed",
    "last_number",
    "last_python_block",
    "numbers",
    "strip_thinking",
]
