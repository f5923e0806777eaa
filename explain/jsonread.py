"""Read typed values out of parsed JSON, naming the path of whatever is wrong. Pure.

Used by ``from_json`` of the attribution and record types: a stored or received document is
parsed once into frozen dataclasses, and every check failure raises
:class:`~explain.errors.ExplanationError` with the JSON path (``$.prompt.ids[3]``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from explain.errors import ExplanationError

T = TypeVar("T")


def fail(path: str, problem: str) -> ExplanationError:
    return ExplanationError(f"malformed explanation: {path} {problem}")


def obj(
    value: object, path: str, required: Collection[str], optional: Collection[str] = ()
) -> dict[str, Any]:
    """``value`` as an object with exactly the ``required`` members and some of ``optional``."""
    if not isinstance(value, dict):
        raise fail(path, f"must be an object, not {_kind(value)}")
    missing = sorted(set(required) - value.keys())
    if missing:
        raise fail(path, f"lacks {', '.join(missing)}")
    unknown = sorted(str(k) for k in value.keys() - set(required) - set(optional))
    if unknown:
        raise fail(path, f"has unknown member(s) {', '.join(unknown)}")
    return value


def string(value: object, path: str, *, max_len: int = 4096, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise fail(path, f"must be a string, not {_kind(value)}")
    if not allow_empty and not value:
        raise fail(path, "must not be empty")
    if len(value) > max_len:
        raise fail(path, f"is longer than {max_len} characters")
    return value


def integer(value: object, path: str, lo: int = 0, hi: int = 2**53 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(path, f"must be an integer, not {_kind(value)}")
    if not lo <= value <= hi:
        raise fail(path, f"must lie in [{lo}, {hi}]")
    return value


def number(value: object, path: str) -> float:
    """A finite JSON number as a float (an integer in the text reads as one: ``0`` is ``0.0``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise fail(path, f"must be a number, not {_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise fail(path, "must be finite")
    return result


def boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise fail(path, f"must be true or false, not {_kind(value)}")
    return value


def choice(value: object, path: str, options: Collection[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise fail(path, f"must be one of {', '.join(sorted(options))}")
    return value


def array(
    value: object, path: str, item: Callable[[object, str], T], *, max_len: int = 1 << 20
) -> tuple[T, ...]:
    if not isinstance(value, list | tuple):
        raise fail(path, f"must be an array, not {_kind(value)}")
    if len(value) > max_len:
        raise fail(path, f"has more than {max_len} items")
    return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))


def optional(value: object, path: str, item: Callable[[object, str], T]) -> T | None:
    return None if value is None else item(value, path)


ID_MAX = 256
_CODE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def text(value: object, path: str, max_len: int = ID_MAX, *, allow_empty: bool = True) -> str:
    """A string without control characters (identifiers, names, messages)."""
    result = string(value, path, max_len=max_len, allow_empty=allow_empty)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in result):
        raise fail(path, "must not contain control characters")
    return result


def code(value: object, path: str) -> str:
    """A machine code: lower case, ``[a-z][a-z0-9_.-]*``, at most 64 characters."""
    result = string(value, path, max_len=64)
    if not _CODE.fullmatch(result):
        raise fail(path, "must be a lower-case code ([a-z][a-z0-9_.-]*)")
    return result


def building(build: Callable[[], T], what: str) -> T:
    """Run ``build()``; a constructor's ExplanationError names the object it was building."""
    try:
        return build()
    except ExplanationError as exc:
        raise ExplanationError(f"{what}: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ExplanationError(f"malformed explanation: {name} is not a JSON number")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ExplanationError(f"malformed explanation: member {key!r} appears twice")
        result[key] = value
    return result


def loads(data: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate members; errors as ExplanationError."""
    try:
        return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ExplanationError(f"malformed explanation: not JSON ({type(exc).__name__})") from exc


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
