"""Numbered placeholders within a request, and restoring them in the answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.pseudonym import MAX_PLACEHOLDER_CHARS, Pseudonymizer, partial_placeholder_start


def test_the_same_value_gets_the_same_placeholder_and_types_count_separately() -> None:
    p = Pseudonymizer()
    assert p.placeholder("PERSON", "Jane Doe") == "<PERSON_1>"
    assert p.placeholder("EMAIL_ADDRESS", "jane@example.com") == "<EMAIL_ADDRESS_1>"
    assert p.placeholder("PERSON", "John Roe") == "<PERSON_2>"
    assert p.placeholder("PERSON", "Jane Doe") == "<PERSON_1>"
    assert p.issued == 3


def test_restore_accepts_rewritten_placeholders_of_this_request_only() -> None:
    p = Pseudonymizer()
    p.placeholder("PERSON", "Jane Doe")
    p.placeholder("EMAIL_ADDRESS", "jane@example.com")
    answer = "Dear <PERSON_1>, write to < email_address_1 > or <Person_1>; <PERSON_7> and <PHONE_1> stay."
    assert p.restore(answer) == (
        "Dear Jane Doe, write to jane@example.com or Jane Doe; <PERSON_7> and <PHONE_1> stay."
    )


def test_placeholders_typed_by_the_client_are_never_issued_or_restored() -> None:
    prompt = "My colleague <PERSON_1> wrote to Jane Doe"
    p = Pseudonymizer([prompt])
    assert p.placeholder("PERSON", "Jane Doe") == "<PERSON_2>"  # <PERSON_1> is the client's own text
    assert p.restore("Ask <PERSON_1> and <PERSON_2>") == "Ask <PERSON_1> and Jane Doe"


def test_nothing_issued_nothing_restored() -> None:
    assert Pseudonymizer().restore("<PERSON_1>") == "<PERSON_1>"


def test_a_partial_placeholder_at_the_end_is_found() -> None:
    assert partial_placeholder_start("Dear <PERS", 0) == 5
    assert partial_placeholder_start("Dear <PERSON_1> and", 0) is None
    assert partial_placeholder_start("a < b", 0) == 2  # a bare '<' is held briefly too
    assert partial_placeholder_start("x" * 100 + "<" + "y" * MAX_PLACEHOLDER_CHARS, 0) is None  # bounded
    assert partial_placeholder_start("<PERS", 3) is None  # before what may still be released


@given(
    st.lists(
        st.tuples(st.sampled_from(["PERSON", "EMAIL_ADDRESS", "US_SSN"]), st.text(min_size=1)), max_size=20
    )
)
def test_restore_inverts_placeholders(values: list[tuple[str, str]]) -> None:
    p = Pseudonymizer()
    tokens = [p.placeholder(t, v) for t, v in values]
    assert [p.restore(tok) for tok in tokens] == [v for _, v in values]
