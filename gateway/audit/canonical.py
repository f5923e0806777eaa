"""Canonical JSON bytes for audit entries: a strict subset of RFC 8785 (JCS).

The same value always encodes to the same bytes, so a hash or a signature over those bytes
means one thing. Within the subset accepted here the output is exactly the RFC 8785 output:

- objects with string keys only, members sorted by the UTF-16 code units of their keys
  (RFC 8785 section 3.2.3; for keys inside the Basic Multilingual Plane this is the same as
  ``sort_keys=True``);
- no insignificant whitespace (``separators=(",", ":")``), UTF-8 output, non-ASCII text kept
  as is (``ensure_ascii=False``), control characters escaped as JSON requires;
- integers only, within +/-(2**53 - 1), so that every JSON implementation reads them back
  exactly; floats are refused (their text form is where JSON encoders disagree);
- ``true``, ``false``, ``null``, strings (well-formed Unicode: lone surrogates are refused),
  arrays (lists or tuples).

Anything else raises :class:`~gateway.errors.AuditError`. This module is pure.
"""

from __future__ import annotations

import json

from gateway.errors import AuditError

MAX_SAFE_INTEGER = 2**53 - 1

_FAST = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=True)

JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", errors="surrogatepass")


def _normalise(value: object, path: str) -> JsonValue:
    """Check ``value`` is in the subset; return it with objects in canonical member order."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise AuditError(f"canonical JSON: integer at {path} is outside +/-(2**53 - 1)")
        return int(value)
    if isinstance(value, float):
        raise AuditError(f"canonical JSON: float at {path} is not allowed; use an integer or a string")
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise AuditError(
                    f"canonical JSON: object key {key!r} at {path} is a {type(key).__name__}, not a string"
                )
        return {key: _normalise(value[key], f"{path}.{key}") for key in sorted(value, key=_utf16_key)}
    raise AuditError(f"canonical JSON: value at {path} has unsupported type {type(value).__name__}")


class _Outside(Exception):
    """``_check`` met something outside the fast subset: ``_normalise`` says what and where."""


def _check(value: object) -> None:
    """The audit writer's hot path: raise ``_Outside`` unless ``value`` is built only of exact
    ``dict`` (ASCII string keys), ``list``/``tuple``, ``str``, safe ``int``, ``bool`` and
    ``None``. For such values ``json.dumps(sort_keys=True)`` already writes the canonical
    member order (code-point order equals UTF-16 order for ASCII keys), so nothing is rebuilt."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return
    if kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            raise _Outside
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                raise _Outside  # non-string or non-ASCII keys: the careful path sorts them
            item_kind = type(item)
            if item_kind is str or item is None or item_kind is bool:
                continue
            if item_kind is int:
                if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                    raise _Outside
                continue
            _check(item)
        return
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]
            _check(item)
        return
    raise _Outside  # floats, subclasses (an IntEnum's text is not its value), anything else


def canonical_json(value: object) -> bytes:
    """Encode ``value`` as canonical JSON (UTF-8 bytes); raise AuditError outside the subset."""
    try:
        _check(value)
    except _Outside:
        normalised = _normalise(value, "$")
        text = json.dumps(normalised, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    else:
        text = _FAST.encode(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AuditError("canonical JSON: text contains a lone surrogate (not well-formed Unicode)") from exc
