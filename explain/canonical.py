"""Canonical JSON bytes for explanation records: RFC 8785 (JCS) including numbers. Pure.

``gateway.audit.canonical`` is the same encoding restricted to integers: it refuses floats on
purpose, because the audit trail has none. An explanation is mostly floats (attribution
scores), so this module adds the one thing that encoder leaves out, RFC 8785 section 3.2.2.3:
a finite float is written as ECMAScript's ``Number.prototype.toString`` writes it (the shortest
digits that read back to the same double, which is what Python's ``repr`` finds, laid out by
ECMAScript's rules for the decimal point and exponent). Everything else is the same:

- objects with string keys only, members sorted by the UTF-16 code units of their keys;
- no insignificant whitespace, UTF-8 output, non-ASCII text as is, control characters escaped;
- numbers are doubles, as in RFC 8785: an integer beyond +/-(2**53 - 1) is accepted only when
  it is the text of a double (a large float such as ``1e20`` reads back from JSON as an int);
  NaN and the infinities are refused;
- ``true``, ``false``, ``null``, strings (lone surrogates refused), arrays (lists or tuples).

Anything else raises :class:`~explain.errors.ExplanationError`.

Speed: most documents (every record of a remote model, every PII finding's score) are text,
small integers and ordinary fractions, for which this is exactly what the C ``json`` encoder
writes with sorted keys: a fraction between 1e-4 and 2**53 is written the same way by Python's
``repr`` and by ECMAScript, and an integral float below 2**53 is written as that integer. So
``canonical_json`` first tries that (about 4x faster: 130 -> 32 us for a remote model's record)
and falls back to the encoder above for anything else: other floats, keys beyond U+D7FF (where
code point and UTF-16 order can differ), large integers, subclasses and other types. A
document with one such value (an attribution score below 1e-4, say) pays for the attempt on top
of the general encoder. The tests check that both give the same bytes.
"""

from __future__ import annotations

import json
import math
from typing import cast

from explain.errors import ExplanationError

MAX_SAFE_INTEGER = 2**53 - 1


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", errors="surrogatepass")


def format_number(value: float) -> str:
    """A finite float as RFC 8785 writes it (ECMAScript ``Number.prototype.toString``)."""
    if not math.isfinite(value):
        raise ExplanationError(f"canonical JSON: {value!r} is not a JSON number")
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    text = repr(abs(value))  # the shortest round-tripping digits, like ECMAScript
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # value = 0.DIGITS * 10**point
    point = len(whole) + exponent - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        body = digits + "0" * (point - count)
    elif 0 < point <= 21:
        body = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        body = "0." + "0" * -point + digits
    else:
        e = point - 1
        head = digits if count == 1 else f"{digits[0]}.{digits[1:]}"
        body = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _is_double_text(value: int, text: str) -> bool:
    """Whether ``text`` (an integer beyond 2**53) is how RFC 8785 writes some double: a large
    float (``1e20``) reads back from JSON as a Python int."""
    try:
        return format_number(float(value)) == text
    except OverflowError:
        return False


def _encode(value: object, path: str, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        text = str(int(value))
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER and not _is_double_text(value, text):
            raise ExplanationError(
                f"canonical JSON: integer at {path} is beyond 2**53 and not a double's text"
            )
        out.append(text)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ExplanationError(f"canonical JSON: number at {path} is {value!r}, not a JSON number")
        out.append(format_number(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, f"{path}[{index}]", out)
        out.append("]")
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ExplanationError(
                    f"canonical JSON: object key {key!r} at {path} is a {type(key).__name__}, not a string"
                )
        out.append("{")
        for index, key in enumerate(sorted(value, key=_utf16_key)):
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(value[key], f"{path}.{key}", out)
        out.append("}")
    else:
        raise ExplanationError(f"canonical JSON: value at {path} has unsupported type {type(value).__name__}")


class _NotPlain(Exception):
    """The value needs the general encoder (see the module docstring)."""


_PLAIN_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
).encode


def _plain(value: object) -> object:
    """``value`` with integral floats below 2**53 as ints, ready for the C encoder; raise
    _NotPlain where that encoder would not write RFC 8785 (exact types only, no subclasses)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -MAX_SAFE_INTEGER <= cast(int, value) <= MAX_SAFE_INTEGER:
            return value
        raise _NotPlain
    if kind is float:
        number = cast(float, value)
        size = abs(number)
        if size == 0:
            return 0  # -0 too
        if 1e-4 <= size <= MAX_SAFE_INTEGER:  # NaN and the infinities fail this
            return int(number) if number.is_integer() else number
        raise _NotPlain
    if kind is list or kind is tuple:
        return [_plain(item) for item in cast(list[object], value)]
    if kind is dict:
        members = cast(dict[object, object], value)
        for key in members:
            if type(key) is not str or not (key.isascii() or max(key) < "\ud800"):
                raise _NotPlain
        return {key: _plain(item) for key, item in members.items()}
    raise _NotPlain


def canonical_json(value: object) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON (UTF-8 bytes); raise ExplanationError if it
    is not JSON (non-finite numbers, non-string keys, unsafe integers, other types)."""
    try:
        text = _PLAIN_ENCODE(_plain(value))
    except (_NotPlain, RecursionError):
        pass  # outside the handler, so the general encoder's errors do not chain to this
    else:
        return _utf8(text)
    return _general(value)


def _general(value: object) -> bytes:
    out: list[str] = []
    _encode(value, "$", out)
    return _utf8("".join(out))


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ExplanationError(
            "canonical JSON: text contains a lone surrogate (not well-formed Unicode)"
        ) from exc
