"""Strict JSON for untrusted text."""

from __future__ import annotations

import json

import pytest

from gateway.jsonsafe import MAX_DEPTH, JsonRejected, deeper_than, has_lone_surrogate, loads_strict


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("x", 0), ([], 1), ({}, 1), ([[1], {"a": [2]}], 3), ({"a": {"b": {"c": []}}}, 4)],
)
def test_depth_counts_arrays_and_objects(value: object, depth: int) -> None:
    assert not deeper_than(value, depth)
    assert deeper_than(value, depth - 1) == (depth > 0)


def test_depth_walk_is_iterative() -> None:
    deep: list[object] = []
    for _ in range(100_000):  # far beyond the recursion limit
        deep = [deep]
    assert deeper_than(deep, MAX_DEPTH)


def test_lone_surrogates_are_found_in_keys_and_values() -> None:
    assert not has_lone_surrogate({"a": ["é", "\U0001f600"]})
    assert has_lone_surrogate({"a": ["\ud800"]})
    assert has_lone_surrogate({"\udfff": 1})


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "NaN",
        '{"a": Infinity}',
        "[-Infinity]",
        "1e400",
        '"\\ud800"',
        '{"\\udc00": 1}',
        nested(MAX_DEPTH + 1),
        nested(100_000),
        "9" * 5000,
        "",
    ],
)
def test_loads_strict_refuses(text: str) -> None:
    with pytest.raises(JsonRejected):
        loads_strict(text)


@pytest.mark.parametrize(
    "text", ['{"a": [1, 2.5, true, null, "\\u00e9\\ud83d\\ude00"]}', nested(MAX_DEPTH), "0"]
)
def test_loads_strict_reads_json(text: str) -> None:
    assert loads_strict(text) == json.loads(text)
