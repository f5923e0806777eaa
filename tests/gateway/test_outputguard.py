"""The output guard: streamed text is released only once settled, redacted per the latest
output decision, and a deny stops it before the offending text is delivered."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import PermissionDenied
from gateway.findings import find, redact
from gateway.outputguard import OutputGuard, guard_all, safe_boundary
from gateway.scanner import ScanFailed
from gateway.types import Finding, Obligations, Redaction, ToolCall

REDACT_ALL = Obligations(
    redact=Redaction(entities=("US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS", "API_KEY"), operator="placeholder")
)


class Policy:
    """Redacts everything; denies when a credential of the listed types appears."""

    def __init__(self, deny_types: tuple[str, ...] = ()) -> None:
        self.deny_types = deny_types
        self.calls: list[tuple[dict[str, int], int, str | None]] = []

    def __call__(self, findings: dict[str, int], tokens: int, finish: str | None) -> Obligations:
        self.calls.append((dict(findings), tokens, finish))
        if any(t in findings for t in self.deny_types):
            raise PermissionDenied("Response withheld by output policy", code="credential_in_output")
        return REDACT_ALL


def stream(pieces: list[str], policy: Policy) -> list[str]:
    guard = OutputGuard(policy, b"k")
    out = [guard.feed(p) for p in pieces]
    out.append(guard.finish(len(pieces), "stop"))
    return out


def test_plain_text_flows_word_by_word() -> None:
    out = stream(["Hello", " there", " world", "."], Policy())
    assert out == ["", "", "Hello there ", "", "world."]  # a capitalised word waits for the next


def test_an_entity_split_over_chunks_is_never_released_in_part() -> None:
    pieces = ["my ssn is 12", "3-4", "5-67", "89 thanks"]
    out = stream(pieces, Policy())
    assert "".join(out) == "my ssn is <US_SSN> thanks"
    assert all("12" not in chunk and "6789" not in chunk for chunk in out)


def test_a_card_number_written_in_groups_is_held_until_complete() -> None:
    out = stream(["card ", "4111 ", "1111 ", "1111 ", "1111", " ok"], Policy())
    assert "".join(out) == "card <CREDIT_CARD> ok"
    assert all("4111" not in chunk for chunk in out)


def test_a_card_in_fullwidth_digits_is_held_too() -> None:
    pieces = ["card ", "４１１１ ", "１１１１ ", "１１１１ ", "１１１１", " thanks"]
    out = stream(pieces, Policy())
    assert "".join(out) == "card <CREDIT_CARD> thanks"
    assert all("１" not in chunk for chunk in out)


def test_a_deny_stops_before_the_credential_is_released() -> None:
    policy = Policy(deny_types=("AWS_ACCESS_KEY",))
    guard = OutputGuard(policy, b"k")
    released = [guard.feed("here is the key "), guard.feed("AKIAABCDEFGHIJ")]
    with pytest.raises(PermissionDenied):
        released.append(guard.feed("KLMNOP and more"))
    assert "AKIA" not in "".join(released)


def test_the_decision_is_asked_only_when_findings_change_and_at_the_end() -> None:
    policy = Policy()
    stream(["a b c ", "d e f ", "x@example.com ", "g h"], policy)
    assert [c[0] for c in policy.calls] == [{}, {"EMAIL_ADDRESS": 1}, {"EMAIL_ADDRESS": 1}]
    assert policy.calls[-1][2] == "stop"


def test_hold_back_is_bounded_but_never_cuts_a_word() -> None:
    # Capitalised words are held as a possible entity, but not past the bound...
    words = "Ab " * 300
    assert safe_boundary(words, 0) == 579  # 900 - 320 = 580 is inside a word that starts at 579
    # ...while a single word longer than the bound is held whole: it only matches whole.
    blob = "x" * 1000
    assert safe_boundary(blob, 0) == 0
    assert safe_boundary("ok " + blob, 0) == 3


def test_a_jwt_longer_than_the_bound_is_never_released_in_part() -> None:
    payload = "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiYWRtaW4iOnRydWV9" * 8
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{payload}.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
    assert len(jwt) > 320
    text = f"your token is {jwt} keep it safe"
    found = [Finding("JWT", text.index(jwt), text.index(jwt) + len(jwt))]

    def find_jwt(t: str) -> list[Finding]:
        return [Finding("JWT", t.index(jwt), t.index(jwt) + len(jwt))] if jwt in t else []

    redact_jwt = Obligations(redact=Redaction(entities=("JWT",), operator="placeholder"))
    guard = OutputGuard(lambda f, t, r: redact_jwt, b"k", find_jwt)
    released = "".join(guard.feed(ch) for ch in text) + guard.finish(len(text), "stop")
    assert released == redact(text, found, ("JWT",), "placeholder", b"k")
    assert "eyJ" not in released


def test_whole_responses_go_through_the_same_rules() -> None:
    text = "mail me at jane@example.com or call"
    out, _, found, _ = guard_all(Policy(), b"k", text, 5, "stop")
    assert out == "mail me at <EMAIL_ADDRESS> or call"
    assert [(f.type, f.start, f.end) for f in found] == [("EMAIL_ADDRESS", 11, 27)]  # in the original text


def test_streamed_findings_keep_their_offsets_in_the_whole_text() -> None:
    guard = OutputGuard(Policy(), b"k")
    out = "".join(guard.feed(p) for p in ["call ", "555 ", "or mail ", "jane@exa", "mple.com ", "bye"])
    out += guard.finish(6, "stop")
    text = "call 555 or mail jane@example.com bye"
    assert out == "call 555 or mail <EMAIL_ADDRESS> bye"
    assert [(f.type, text[f.start : f.end]) for f in guard.findings] == [
        ("EMAIL_ADDRESS", "jane@example.com")
    ]


def test_a_scanner_failure_withholds_the_text() -> None:
    def broken(text: str) -> list[Finding]:
        raise RuntimeError("analyzer crashed")

    guard = OutputGuard(Policy(), b"k", broken)
    with pytest.raises(ScanFailed):
        guard.feed("some text ")
    assert guard.findings == []


def test_nothing_is_scanned_until_something_could_be_released() -> None:
    calls: list[str] = []

    def counting(text: str) -> list[Finding]:
        calls.append(text)
        return []

    guard = OutputGuard(Policy(), b"k", counting)
    assert guard.feed("abc") == "" and guard.feed("def") == ""  # one word still growing
    assert calls == []
    assert guard.feed(" ") == "abcdef "
    assert len(calls) == 1


ALPHABET = st.sampled_from(
    [
        "hello ",
        "x",
        " ",
        "123-45-6789",
        "4111 1111 1111 1111",
        "a@example.com",
        "7",
        "-",
        ".",
        "４１１１ １１１１ １１１１ １１１１",
        "123",
    ]
)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(ALPHABET, max_size=20), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_any_chunking_releases_exactly_the_redacted_whole(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(points)]
    out = stream(pieces, Policy())
    whole = redact(text, find(text), REDACT_ALL.redact.entities, "placeholder", b"k")  # type: ignore[union-attr]
    # Released chunks are consecutive pieces of the redacted whole: no entity is ever released
    # in part, whatever the chunking.
    assert "".join(out) == whole


def test_placeholders_are_restored_whole_even_when_split_across_chunks() -> None:
    from gateway.pseudonym import Pseudonymizer

    pseudo = Pseudonymizer()
    pseudo.placeholder("EMAIL_ADDRESS", "jane@example.com")
    guard = OutputGuard(Policy(), b"k", restore=pseudo.restore)
    pieces = ["Write ", "to <EMAIL", "_ADDRE", "SS_1> now", " please"]
    released = [guard.feed(p) for p in pieces]
    released.append(guard.finish(5, "stop"))
    assert "".join(released) == "Write to jane@example.com now please"
    assert all(
        "<EMAIL" not in r or r.count("<") == r.count(">") for r in released
    )  # never half a placeholder


def test_output_redaction_judges_the_model_text_before_restoring() -> None:
    from gateway.pseudonym import Pseudonymizer

    pseudo = Pseudonymizer()
    pseudo.placeholder("EMAIL_ADDRESS", "jane@example.com")
    # The model wrote a new e-mail address itself: redacted. The placeholder: restored.
    out, _, found, _ = guard_all(
        Policy(), b"k", "mail <EMAIL_ADDRESS_1> or bob@example.org", 5, "stop", restore=pseudo.restore
    )
    assert out == "mail jane@example.com or <EMAIL_ADDRESS>"
    assert [f.type for f in found] == ["EMAIL_ADDRESS"]


def test_tool_call_arguments_are_scanned_redacted_as_json_and_counted_in_the_decision() -> None:
    policy = Policy()
    calls = (
        ToolCall("call_1", "send", '{"to": "bob@example.org", "n": 4111111111111111}'),
        ToolCall("call_2", "note", "plain bob@example.org"),
    )
    text, out, found, per_call = guard_all(policy, b"k", "Sending.", 9, "tool_calls", calls=calls)
    assert text == "Sending."
    assert json.loads(out[0].arguments) == {"to": "<EMAIL_ADDRESS>", "n": "<CREDIT_CARD>"}
    assert out[1].arguments == "plain <EMAIL_ADDRESS>"
    assert [(c.id, c.name) for c in out] == [("call_1", "send"), ("call_2", "note")]
    assert found == [] and [[f.type for f in p] for p in per_call] == [
        ["EMAIL_ADDRESS", "CREDIT_CARD"],
        ["EMAIL_ADDRESS"],
    ]
    assert policy.calls[-1] == ({"CREDIT_CARD": 1, "EMAIL_ADDRESS": 2}, 9, "tool_calls")


def test_a_deny_caused_by_tool_call_arguments_withholds_the_answer() -> None:
    calls = (ToolCall("call_1", "send", '{"key": "sk-live-' + "a" * 40 + '"}'),)
    policy = Policy(deny_types=("API_KEY",))
    with pytest.raises(PermissionDenied):
        guard_all(policy, b"k", "", 3, "tool_calls", calls=calls)
    guard = OutputGuard(policy, b"k")  # a stream: the decision at the end sees the calls too
    assert guard.feed("Clean text then ") == "Clean text then "
    with pytest.raises(PermissionDenied):
        guard.finish_calls(4, "tool_calls", calls)


def test_placeholders_in_arguments_are_restored_with_json_escaping() -> None:
    from gateway.pseudonym import Pseudonymizer

    pseudo = Pseudonymizer()
    pseudo.placeholder("EMAIL_ADDRESS", 'odd"name\\@example.com')
    calls = (ToolCall("call_1", "send", '{"to": "<EMAIL_ADDRESS_1>", "<EMAIL_ADDRESS_1>": 1}'),)
    _, out, _, _ = guard_all(Policy(), b"k", "", 3, "tool_calls", restore=pseudo.restore, calls=calls)
    assert json.loads(out[0].arguments) == {"to": 'odd"name\\@example.com', 'odd"name\\@example.com': 1}


def test_arguments_that_cannot_be_scanned_are_never_released() -> None:
    def broken(text: str) -> list[Finding]:
        if "secret" in text:
            raise RuntimeError("scanner down")
        return []

    guard = OutputGuard(Policy(), b"k", broken)
    with pytest.raises(ScanFailed):
        guard.finish_calls(1, "tool_calls", (ToolCall("call_1", "f", '{"a": "secret"}'),))


def test_the_end_is_decided_even_when_everything_was_released_and_costs_no_scan() -> None:
    scans: list[str] = []

    def counting(text: str) -> list[Finding]:
        scans.append(text)
        return find(text)

    policy = Policy()
    guard = OutputGuard(policy, b"k", counting)
    assert guard.feed("all of it is settled ") == "all of it is settled "
    before = len(scans)
    assert guard.finish(5, "length") == ""
    assert len(scans) == before  # nothing unreleased: nothing to scan
    assert policy.calls[-1] == ({}, 5, "length")  # but the final decision was asked
