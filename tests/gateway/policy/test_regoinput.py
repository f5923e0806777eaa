"""The fast input marshaller gives the engine exactly what parsing the JSON text gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from regopy import Interpreter
from regopy.rego_shared import rego_free_output, rego_output_string, rego_query

from gateway.policy.regoinput import NeedsJson, to_input

# rego-cpp writes object keys into its output without escaping them, so keys stay plain here
# (policy input keys are all fixed identifiers).
KEYS = st.text("abcdefghijklmnopqrstuvwxyz_ABC0123456789", max_size=8)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False, width=32),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)

INTERP = Interpreter()


def _echo() -> Any:
    out = rego_query(INTERP._impl, "input")
    try:
        return json.loads(rego_output_string(out), strict=False)["expressions"][0]
    finally:
        rego_free_output(out)


@given(value=st.dictionaries(KEYS, json_values, max_size=5))
def test_same_input_as_the_json_path(value: dict[str, Any]) -> None:
    INTERP.set_input_term(json.dumps(value))
    via_json = _echo()
    try:
        INTERP.set_input(to_input(value))
    except NeedsJson:
        return  # the engine passes such documents as JSON text
    assert _echo() == via_json


@pytest.mark.parametrize(
    "value", [2**63, 2**64 + 100, -(2**60), 0.0078125, 1e-7, 'say "hi"', "back\\slash", "nul\x00", "tab\t"]
)
def test_values_the_fast_path_would_alter_take_the_json_path(value: Any) -> None:
    assert to_input({"t": 0.7, "s": "plain text, é"}) is not None
    with pytest.raises(NeedsJson):
        to_input({"t": value})


@pytest.mark.parametrize("bad", [{"a": {1, 2}}, {"a": b"bytes"}, {"a": object()}])
def test_unsupported_values_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cannot pass"):
        to_input(bad)
