"""Strict JSON for untrusted text: bounded nesting, no NaN or Infinity, no lone surrogates. Pure.

Used for request bodies (``gateway.api.schemas``) and for the JSON text a chat request carries
inside a string, a tool call's ``arguments`` (``gateway.toolargs``, and the worker that hands
them to a chat template). Everything deeper than ``MAX_DEPTH`` levels of arrays and objects is
refused: nothing legitimate nests that far, and deep values would otherwise reach recursive
code (validation, templates, ``json.dumps``) that fails with ``RecursionError``.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # levels of arrays and objects; the request body's own object is level 1


class JsonRejected(ValueError):
    """The text is not strict JSON (see the module docstring); the message says why."""


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (decoded JSON) nests more than ``limit`` arrays and objects.

    Iterative, so that it is safe on any depth ``json.loads`` returns."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string (or key) in ``value`` holds an unpaired UTF-16 surrogate (``"\\ud800"``).

    Iterative, like ``deeper_than``."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _no_constants(name: str) -> Any:
    raise JsonRejected(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: json.dumps would write Infinity
        raise JsonRejected("a number is out of range")
    return value


def loads_strict(text: str) -> Any:
    """``text`` decoded; ``JsonRejected`` unless it is JSON within ``MAX_DEPTH`` levels, without
    ``NaN``/``Infinity`` (spelled, or a number out of float range) and without unpaired surrogates."""
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except JsonRejected:
        raise
    except RecursionError as exc:
        raise JsonRejected("nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
        raise JsonRejected(f"not JSON: {exc}") from exc
    if deeper_than(value):
        raise JsonRejected(f"nested more than {MAX_DEPTH} levels deep")
    if has_lone_surrogate(value):
        raise JsonRejected("holds an unpaired UTF-16 surrogate")
    return value
