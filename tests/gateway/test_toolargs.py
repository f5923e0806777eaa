"""Tool-call arguments: canonical form, and redaction that keeps JSON valid."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import toolargs
from gateway.findings import find
from gateway.jsonsafe import loads_strict
from gateway.pseudonym import Pseudonymizer
from gateway.types import REDACT_OPERATORS, Finding, RedactOperator

OPERATORS: list[RedactOperator] = [o for o in REDACT_OPERATORS if o != "block"]
ALL = ("EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PERSON")


def redact(text: str, operator: RedactOperator = "placeholder", pseudo: Pseudonymizer | None = None) -> str:
    return toolargs.redact(text, find(text), ALL, operator, b"k", pseudo)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"to": "jane@example.com"}', '{"to": "<EMAIL_ADDRESS>"}'),
        ('{"card": 4111111111111111}', '{"card": "<CREDIT_CARD>"}'),
        ('{"card": [4111111111111111.5, -1]}', '{"card": ["<CREDIT_CARD>", -1]}'),
        ('{"jane@example.com": 1}', '{"<EMAIL_ADDRESS>": 1}'),
        ('{"q": "say \\"jane@example.com\\"\\n"}', '{"q": "say \\"<EMAIL_ADDRESS>\\"\\n"}'),
        ('{"n": "123-45-6789"}', '{"n": "<US_SSN>"}'),
        ("mail jane@example.com {", "mail <EMAIL_ADDRESS> {"),  # not JSON: plain text
        ('{"clean": true}', '{"clean": true}'),
    ],
)
def test_redaction_in_json(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_numbered_placeholders_restore_the_decoded_value() -> None:
    pseudo = Pseudonymizer()
    text = toolargs.canonical('{"to": "jane\\u0040example.com", "cc": "jane@example.com"}')
    out = redact(text, pseudo=pseudo)
    assert out == '{"to": "<EMAIL_ADDRESS_1>", "cc": "<EMAIL_ADDRESS_1>"}'
    assert pseudo.restore("<EMAIL_ADDRESS_1>") == "jane@example.com"


def test_a_span_never_cuts_an_escape_sequence() -> None:
    text = '{"a": "x\\u00e9y\\ud83d\\ude00z\\"w"}'
    # Spans that start or end inside escape sequences, as a named-entity recogniser might give.
    for start in range(7, len(text) - 2):
        for end in range(start + 1, len(text) - 1):
            out = toolargs.redact(text, [Finding("PERSON", start, end)], ["PERSON"], "mask", b"k")
            assert isinstance(loads_strict(out)["a"], str), (start, end, out)


def test_spans_across_structure_leave_the_structure_alone() -> None:
    text = '{"first": "Jane", "last": "Doe", "n": 12}'
    start, end = text.index("ne"), text.index("oe")  # from inside "Jane" to inside "Doe"
    out = toolargs.redact(text, [Finding("PERSON", start, end)], ["PERSON"], "placeholder", b"k")
    assert json.loads(out) == {"first": "Ja<PERSON>", "<PERSON>": "<PERSON>oe", "n": 12}
    assert toolargs.redact(text, [Finding("PERSON", 0, len(text))], ["PERSON"], "remove", b"k") == (
        '{"": "", "": "", "": ""}'
    )


def test_only_wanted_entities_are_redacted() -> None:
    text = '{"to": "jane@example.com", "ssn": "123-45-6789"}'
    out = toolargs.redact(text, find(text), ["US_SSN"], "placeholder", b"k")
    assert out == '{"to": "jane@example.com", "ssn": "<US_SSN>"}'


# --- properties ---------------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
sensitive = st.sampled_from(["jane@example.com", "4111 1111 1111 1111", "123-45-6789", 'a"b\\c\n', "é😀"])
texts = st.one_of(
    st.text(max_size=12), sensitive, st.builds("".join, st.lists(st.text(max_size=4) | sensitive, max_size=4))
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def json_with_spans(draw: st.DrawFn) -> tuple[str, list[Finding]]:
    value = draw(json_values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))  # escapes everywhere, or canonical
    spans = draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(0, len(text))), max_size=5))
    return text, [Finding("PERSON", min(a, b), max(a, b)) for a, b in spans if a != b]


@SETTINGS
@given(json_with_spans(), st.sampled_from(OPERATORS), st.booleans())
def test_any_spans_keep_json_valid(
    case: tuple[str, list[Finding]], operator: RedactOperator, numbered: bool
) -> None:
    text, found = case
    out = toolargs.redact(text, found, ["PERSON"], operator, b"k", Pseudonymizer() if numbered else None)
    loads_strict(out)
    if not found:
        assert out == text


@SETTINGS
@given(json_values, st.sampled_from(["placeholder", "mask", "hash"]))
def test_detected_values_are_gone_and_json_stays_valid(value: Any, operator: RedactOperator) -> None:
    text = toolargs.canonical(json.dumps(value))
    out = redact(text, operator)
    loads_strict(out)
    assert [f for f in find(out) if f.type in ALL] == []


@SETTINGS
@given(json_values)
def test_canonical_form_is_stable_and_means_the_same(value: Any) -> None:
    text = toolargs.canonical(json.dumps(value))
    assert toolargs.canonical(text) == text
    assert json.loads(text) == value
