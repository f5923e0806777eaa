from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explain.canonical import MAX_SAFE_INTEGER, _general, _NotPlain, _plain, canonical_json, format_number
from explain.errors import ExplanationError
from gateway.audit.canonical import canonical_json as audit_canonical_json

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


# RFC 8785 appendix B and ECMAScript Number.prototype.toString.
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (4.5, "4.5"),
        (0.002, "0.002"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (123456789.0, "123456789"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.2345e22, "1.2345e+22"),
        (333333333.3333333, "333333333.3333333"),
        (9007199254740992.0, "9007199254740992"),
        (295147905179352830000.0, "295147905179352830000"),
        (5e-324, "5e-324"),
        (-5e-324, "-5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123.456, "123.456"),
        (-0.0000123, "-0.0000123"),
    ],
)
def test_numbers_as_ecmascript_writes_them(value: float, expected: str) -> None:
    assert format_number(value) == expected
    # The same inside documents, whichever path (the C encoder's or the general one) writes them.
    assert canonical_json([value, {"k": value}]) == f'[{expected},{{"k":{expected}}}]'.encode()


# Ordinary fractions and integral floats (what the C encoder's path takes) besides any float,
# keys with characters on both sides of the surrogate range, and unsafe integers.
mixed_scalars = (
    json_scalars
    | st.floats(min_value=1e-4, max_value=1e6)
    | st.integers(-(2**53), 2**53).map(float)
    | st.integers(min_value=MAX_SAFE_INTEGER + 1, max_value=2**64)
    | st.sampled_from(["\ud7ff", "\ue000", "\uff61", "\U0001f600", "a\x00\x1f\"\\\u2028", "\ud800", "a\udfff"])
)
mixed_values = st.recursive(
    mixed_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.tuples(children, children)
    | st.dictionaries(st.text() | st.sampled_from(["\ue000", "\U0001f600", "b"]), children, max_size=5),
    max_leaves=30,
)


def test_a_remote_models_record_takes_the_fast_path() -> None:
    record = {
        "v": 1,
        "request_id": "req_1",
        "decision": {"status": 200, "reasons": [], "rules": [{"rule": "a", "detail": "b"}]},
        "pii_findings": [{"entity": "PERSON", "score": 0.85, "start": 4, "end": 9}, {"score": 1.0}],
        "timing": (0.0, -0.0, 12.5),
        "note": "caf\u00e9 \u2028 \x01",
        "model_attribution": {"status": "skipped", "attribution": None, "final": False},
    }
    assert _plain(record) == {**record, "timing": [0, 0, 12.5]}  # taken (no _NotPlain), floats as ints
    assert canonical_json(record) == _general(record)


@pytest.mark.parametrize("value", [1e-5, 1e16, 2**53, {"\ud800x": 1}, {"\U0001f600": 1}, 1.5j])
def test_values_the_c_encoder_would_write_differently_take_the_general_path(value: object) -> None:
    with pytest.raises(_NotPlain):
        _plain([value])


@given(mixed_values)
def test_fast_path_writes_what_the_general_encoder_writes(value: object) -> None:
    try:
        expected: bytes | type[ExplanationError] = _general(value)
    except ExplanationError:
        expected = ExplanationError
    if expected is ExplanationError:
        with pytest.raises(ExplanationError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_read_back_exactly(value: float) -> None:
    text = format_number(value)
    assert float(text) == value
    assert float(json.loads(text)) == value


@given(json_values)
def test_encoding_is_json_and_stable(value: object) -> None:
    encoded = canonical_json(value)
    again = canonical_json(json.loads(encoded))
    assert again == encoded


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.text(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
        max_leaves=20,
    )
)
def test_same_bytes_as_the_audit_encoder_without_floats(value: object) -> None:
    assert canonical_json(value) == audit_canonical_json(value)


def test_keys_sorted_by_utf16_code_units() -> None:
    # U+FF61 sorts before U+1F600 in UTF-16 (a surrogate pair starts with 0xD83D), not in code points.
    assert (
        canonical_json({"\U0001f600": 1, "\uff61": 2, "a": 3}) == '{"a":3,"\U0001f600":1,"\uff61":2}'.encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1, math.nan],
        {"a": math.inf},
        2**53 + 1,
        2**1024,
        {1: "x"},
        b"x",
        "\ud800",
        object(),
    ],
)
def test_refuses_what_is_not_canonical_json(value: object) -> None:
    with pytest.raises(ExplanationError):
        canonical_json(value)
