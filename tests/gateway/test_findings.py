"""Pattern detectors and redaction operators."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.findings import ENTITY_TYPES, counts, find, redact

CASES = [
    ("my ssn is 123-45-6789.", "US_SSN", "123-45-6789"),
    ("card 4111 1111 1111 1111 ok", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card 4111-1111-1111-1111", "CREDIT_CARD", "4111-1111-1111-1111"),
    ("mail jane.doe+x@mail.example.org now", "EMAIL_ADDRESS", "jane.doe+x@mail.example.org"),
    ("id AKIAABCDEFGHIJKLMNOP end", "AWS_ACCESS_KEY", "AKIAABCDEFGHIJKLMNOP"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMII", "PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----"),
    ("token sk-abcdefghijklmnopqrstuvwxyz123", "API_KEY", "sk-abcdefghijklmnopqrstuvwxyz123"),
]


@pytest.mark.parametrize(("text", "etype", "value"), CASES, ids=[c[1] for c in CASES])
def test_each_detector(text: str, etype: str, value: str) -> None:
    (f,) = find(text)
    assert (f.type, text[f.start : f.end]) == (etype, value)


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("4111 1111 1111 1111 123", "4111 1111 1111 1111"),  # card, then a CVV
        ("exp 4111 1111 1111 1111 12/25", "4111 1111 1111 1111"),
        ("qty 2 4111 1111 1111 1111", "4111 1111 1111 1111"),  # a quantity before it
        ("call 555 4111111111111111", "4111111111111111"),
        ("123-45-6789 4111 1111 1111 1111", "4111 1111 1111 1111"),  # after an SSN
        (
            "card ４１１１ １１１１ １１１１ １１１１ ok",
            "４１１１ １１１１ １１１１ １１１１",
        ),  # fullwidth digits
    ],
)
def test_cards_inside_longer_digit_runs(text: str, card: str) -> None:
    assert card in [text[f.start : f.end] for f in find(text) if f.type == "CREDIT_CARD"]


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456 and 666-12-3456",
        "4111 1111 1111 1112",
        "version 1.2.3",
        "a@b",
        "AKIA123",
        "phone 555-1234",
    ],
)
def test_near_misses_are_not_findings(text: str) -> None:
    assert find(text) == []


def test_counts_and_redaction_operators() -> None:
    text = "a@example.com and b@example.com, ssn 123-45-6789"
    found = find(text)
    assert counts(found) == {"EMAIL_ADDRESS": 2, "US_SSN": 1}
    assert redact(text, found, ["EMAIL_ADDRESS"], "placeholder", b"k") == (
        "<EMAIL_ADDRESS> and <EMAIL_ADDRESS>, ssn 123-45-6789"
    )
    assert redact(text, found, ["US_SSN"], "mask", b"k").endswith("ssn ***********")
    assert redact(text, found, ["US_SSN"], "remove", b"k").endswith("ssn ")
    hashed = redact(text, found, ["EMAIL_ADDRESS"], "hash", b"k")
    tags = [w for w in hashed.split() if w.startswith("<EMAIL_ADDRESS:")]
    assert len(tags) == 2 and tags[0] != tags[1].rstrip(",")
    assert redact(text, found, ["EMAIL_ADDRESS"], "hash", b"other") != hashed


@given(st.text(max_size=300))
def test_findings_are_ordered_and_disjoint(text: str) -> None:
    found = find(text)
    for a, b in itertools.pairwise(found):
        assert a.end <= b.start
    assert all(f.type in ENTITY_TYPES and 0 <= f.start < f.end <= len(text) for f in found)
