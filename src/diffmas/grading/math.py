"""Math answers: pick the final answer out of a solution and compare it with the gold answer.

Extraction order: the last `\\boxed{...}` (balanced braces), else the last "answer is ..." phrase, else the
last number. Comparison: a fast exact-number path (commas, `$`, `%`, units and `\\text{}` stripped), then
math-verify (`parse` + `verify`) for LaTeX, fractions, expressions and sets.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

from diffmas.grading.extract import answer_phrase, last_boxed, last_number, numbers, strip_thinking


def extract_math_answer(output: str) -> tuple[str | None, str]:
    """(answer, how): how is `boxed`, `phrase`, `number` or `none`."""
    text = strip_thinking(output)
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    phrase = answer_phrase(text)
    if phrase is not None:
        return _trim_phrase(phrase), "phrase"
    num = last_number(text)
    if num is not None:
        return num, "number"
    return None, "none"


def _trim_phrase(phrase: str) -> str:
    """An "answer is ..." line often goes on in prose: keep its first math span, or its first number."""
    math_span = re.search(r"\$([^$]+)\$|\\\((.+?)\\\)", phrase)
    if math_span:
        return (math_span.group(1) or math_span.group(2)).strip()
    if len(phrase.split()) <= 2 or parse_number(phrase) is not None:
        return phrase
    nums = numbers(phrase)
    return nums[0] if nums else phrase


_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|mathbf)\s*\{([^{}]*)\}")
_UNIT_WORDS = (
    r"dollars?|cents?|usd|euros?|pounds?|percent|per\s*cent|units?|meters?|metres?|cm|km|kg|g|grams?|"
    r"hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|miles?|feet|foot|ft|inches?|"
    r"items?|people|students?|apples?|points?|degrees?|sq\.?\s*\w+|square\s+\w+|cubic\s+\w+"
)


def clean_answer(ans: str) -> str:
    """Strip what never changes a value: `$`, `\\$`, `\\text{...}` wrappers, `\\left/\\right`, trailing
    periods, `x =` prefixes on a bare number, and unit words after a number."""
    s = ans.strip()
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = s.replace("\\$", "").replace("\\%", "%").replace("\\!", "").replace("\\,", "").replace("~", " ")
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = re.sub(r"\\(?:d|t)frac", r"\\frac", s)
    s = re.sub(r"^\\text\s*\{(.*)\}$", r"\1", s)
    s = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = s.strip().rstrip(".").strip()
    m = re.fullmatch(r"[a-zA-Z]\s*=\s*(.+)", s)
    if m and re.fullmatch(r"[-−]?[\d,]*\.?\d+", m.group(1).strip()):
        s = m.group(1).strip()
    m = re.fullmatch(rf"([-−]?[\d,]*\.?\d+(?:/\d+)?)\s*(?:{_UNIT_WORDS})\b\.?", s, flags=re.I)
    if m:
        s = m.group(1)
    return s.strip()


_PLAIN_NUMBER = re.compile(r"(-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?)(?:/(\d+(?:\.\d+)?))?")


def parse_number(ans: str) -> tuple[Fraction, bool] | None:
    """(exact value, had a % sign) of a plain number ("1,000", "-0.5", ".5", "3/4", "50%"), else None."""
    s = clean_answer(ans).replace("−", "-").replace(" ", "")
    percent = s.endswith("%")
    m = _PLAIN_NUMBER.fullmatch(s.rstrip("%"))
    if not m or not re.search(r"\d", m.group(1)):
        return None
    try:
        value = Fraction(m.group(1).replace(",", "")) / Fraction(m.group(2) or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return value, percent


def as_number(ans: str) -> Fraction | None:
    """The value of a plain number, with "50%" read as 50 (graders also accept it as 0.5)."""
    parsed = parse_number(ans)
    return parsed[0] if parsed else None


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


def _mv_parse(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    main = threading.current_thread() is threading.main_thread()
    wrapped = text if text.strip().startswith("$") else f"${text}$"
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return parse(wrapped, extraction_config=configs, parsing_timeout=5 if main else None)


def math_equal(pred: str | None, gold: str) -> bool:
    """Whether `pred` and `gold` denote the same value (exact numbers first, then math-verify)."""
    if pred is None or not pred.strip():
        return False
    p_num, g_num = parse_number(pred), parse_number(gold)
    if p_num is not None and g_num is not None:
        (p, p_pct), (g, g_pct) = p_num, g_num
        return _close(p, g) or (p_pct and _close(p / 100, g)) or (g_pct and _close(p, g / 100))
    if clean_answer(pred).replace(" ", "") == clean_answer(gold).replace(" ", ""):
        return True
    try:
        from math_verify import verify

        main = threading.current_thread() is threading.main_thread()
        gold_parsed = _mv_parse(clean_answer(gold))
        pred_parsed = _mv_parse(clean_answer(pred))
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=5 if main else None))
    except Exception:  # math-verify raises assorted sympy errors on odd input: not equal
        return False


def integer_value(ans: str | None) -> int | None:
    """The integer an answer denotes ("033" -> 33, "1,000" -> 1000, "12.0" -> 12), else None."""
    if ans is None:
        return None
    value = as_number(ans)
    if value is None or value.denominator != 1:
        return None
    return int(value)


__all__ = ["as_number", "parse_number", "clean_answer", "extract_math_answer", "integer_value", "math_equal"]
