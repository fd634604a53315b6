"""Plain data across the sandbox wall: the only thing the code grader accepts from an untrusted program.

The trusted test process calls the candidate's functions through a pipe; arguments go out and return
values come back in this encoding, and the trusted side rebuilds them from builtin types only. An
object with a forged `__eq__`, an `int` subclass, a generator or anything else that is not plain data
cannot cross: decoding it is impossible by construction, because the decoder never calls code that
the message names. This file is stdlib-only and self-contained because the sandbox imports it too
(read-only, outside the project tree).

Encoding (JSON underneath): `None`, `bool`, `str` and finite `float`/`int` are themselves; a list is a
JSON list; everything else is a one-key object: `{"t": [...]}` tuple, `{"s": [...]}` set,
`{"fs": [...]}` frozenset, `{"d": [[k, v], ...]}` dict (any plain keys, insertion order kept),
`{"b": "hex"}` bytes, `{"f": "nan" | "inf" | "-inf"}` a non-finite float, `{"c": [re, im]}` complex,
`{"i": "-1f..."}` an int of more than `BIG_INT_BITS` bits in hexadecimal (Python refuses to write or read
an int of over 4,300 decimal digits, a guard against quadratic conversion; base 16 is linear and has no
such limit, so a correct answer of any size crosses).
"""

from __future__ import annotations

import json
import math
import os
import struct

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # a reply larger than this is a failure, not a memory bomb
MAX_DEPTH = 200
BIG_INT_BITS = 4096  # larger ints travel in hex (well under the 4,300-digit limit of decimal text)


class NotPlainData(TypeError):
    """A value that is not built from builtin plain types (or a malformed message)."""


def encode(value: object, depth: int = 0) -> object:
    """`value` as a JSON-able tree. Exact types only: a subclass of int/str/list is not plain data."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if value.bit_length() <= BIG_INT_BITS else {"i": format(value, "x")}
    if t is float:
        return value if math.isfinite(value) else {"f": repr(value)}
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [encode(value.real, depth + 1), encode(value.imag, depth + 1)]}
    raise NotPlainData(f"{t.__module__}.{t.__qualname__} is not plain data")


def decode(tree: object, depth: int = 0) -> object:
    """Rebuild a value from `encode`'s tree; anything else raises NotPlainData."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    t = type(tree)
    if tree is None or t in (bool, str, int, float):
        return tree
    if t is list:
        return [decode(v, depth + 1) for v in tree]
    if t is not dict or len(tree) != 1:
        raise NotPlainData(f"malformed value {str(tree)[:80]!r}")
    ((tag, body),) = tree.items()
    if tag == "f" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag == "i" and type(body) is str:
        digits = body[1:] if body.startswith("-") else body
        if not digits or not all(c in "0123456789abcdef" for c in digits):
            raise NotPlainData("malformed int")
        return int(body, 16)
    if tag == "b" and type(body) is str:
        try:
            return bytes.fromhex(body)
        except ValueError as e:
            raise NotPlainData("malformed bytes") from e
    if type(body) is not list:
        raise NotPlainData(f"malformed value {str(tree)[:80]!r}")
    items = [decode(v, depth + 1) for v in body]
    try:
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "fs":
            return frozenset(items)
        if tag == "d":
            if not all(type(p) is list and len(p) == 2 for p in items):
                raise NotPlainData("malformed dict")
            return {k: v for k, v in items}
        if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
            return complex(items[0], items[1])
    except TypeError as e:  # an unhashable key or set member: lists inside a set, say
        raise NotPlainData(str(e)) from e
    raise NotPlainData(f"unknown tag {tag!r}")


def send(fd: int, message: dict) -> None:
    """Write one length-prefixed JSON message."""
    data = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    _write_all(fd, struct.pack(">I", len(data)) + data)


def receive(fd: int) -> dict | None:
    """Read one message; None at end of file (the other side is gone). Malformed input raises."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_MESSAGE_BYTES:
        raise NotPlainData(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    body = _read_exact(fd, size)
    if body is None:
        return None
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NotPlainData(f"malformed message: {e}") from e
    if type(message) is not dict:
        raise NotPlainData("malformed message")
    return message


def _no_constant(name: str) -> object:
    raise NotPlainData(f"bare {name} in a message")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
