from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.canonical import MAX_SAFE_INTEGER, canonical_json
from gateway.errors import AuditError

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"z": {"y": 1, "x": [3, 2, 1]}, "a": None}, b'{"a":null,"z":{"x":[3,2,1],"y":1}}'),
        ({"k": True, "j": False}, b'{"j":false,"k":true}'),
        ([1, "two", None], b'[1,"two",null]'),
        (("tuple", 1), b'["tuple",1]'),
        ("caf\u00e9 \u2603 \U0001f600", '"caf\u00e9 \u2603 \U0001f600"'.encode()),
        ('line\nbreak\t"q" \\ \x01', b'"line\\nbreak\\t\\"q\\" \\\\ \\u0001"'),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ({}, b"{}"),
    ],
)
def test_canonical_bytes(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_keys_sort_by_utf16_code_units() -> None:
    # RFC 8785 3.2.3: U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB01.
    assert canonical_json({"\ufb01": 1, "\U0001f600": 2}) == '{"\U0001f600":2,"\ufb01":1}'.encode()


@pytest.mark.parametrize("value", [1.0, 0.5, {"latency": 1.5}, [float("nan")], float("inf")])
def test_floats_refused(value: Any) -> None:
    with pytest.raises(AuditError, match="float"):
        canonical_json(value)


@pytest.mark.parametrize("value", [{1: "a"}, {None: "a"}, {("a",): 1}, {"ok": {2: "b"}}])
def test_non_string_keys_refused(value: Any) -> None:
    with pytest.raises(AuditError, match="not a string"):
        canonical_json(value)


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30])
def test_unsafe_integers_refused(value: int) -> None:
    with pytest.raises(AuditError, match="2\\*\\*53"):
        canonical_json(value)


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object(), "\ud800"])
def test_other_values_refused(value: Any) -> None:
    with pytest.raises(AuditError):
        canonical_json(value)


@given(json_values)
def test_round_trip_is_stable(value: Any) -> None:
    encoded = canonical_json(value)
    assert canonical_json(json.loads(encoded.decode("utf-8"))) == encoded


@given(st.dictionaries(st.text(), json_scalars, max_size=8))
def test_member_order_does_not_matter(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(reordered) == canonical_json(value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_the_fast_path_encodes_exactly_like_the_careful_one(value: object) -> None:
    from gateway.audit import canonical

    careful = json.dumps(canonical._normalise(value, "$"), ensure_ascii=False, separators=(",", ":"))
    try:
        expected: bytes | None = careful.encode("utf-8")
    except UnicodeEncodeError:
        expected = None
    if expected is None:
        with pytest.raises(AuditError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected
