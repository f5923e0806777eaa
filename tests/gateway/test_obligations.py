"""Applying obligations to requests and responses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.errors import PermissionDenied
from gateway.findings import find
from gateway.obligations import apply_input, apply_output, finding_counts, scan_request
from gateway.types import ChatMessage, GenerateRequest, GenerationParams, Obligations, Redaction

CHAT = GenerateRequest(
    id="r",
    params=GenerationParams(max_tokens=500),
    messages=(
        ChatMessage("system", "be brief"),
        ChatMessage("user", "mail jane@example.com, card 4111 1111 1111 1111, ssn 123-45-6789"),
    ),
)


def test_scan_counts_per_type() -> None:
    assert finding_counts(scan_request(CHAT)) == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "US_SSN": 1}


def test_cap_lowers_never_raises() -> None:
    found = scan_request(CHAT)
    assert apply_input(CHAT, found, Obligations(max_tokens=64), b"k").params.max_tokens == 64
    assert apply_input(CHAT, found, Obligations(max_tokens=4096), b"k").params.max_tokens == 500
    assert apply_input(CHAT, found, Obligations(), b"k") == CHAT


def test_redaction_of_prompts() -> None:
    ob = Obligations(redact=Redaction(("EMAIL_ADDRESS", "CREDIT_CARD"), "placeholder"))
    out = apply_input(CHAT, scan_request(CHAT), ob, b"k")
    assert out.messages is not None
    assert out.messages[0] == CHAT.messages[0]  # type: ignore[index]
    assert out.messages[1].content == "mail <EMAIL_ADDRESS>, card <CREDIT_CARD>, ssn 123-45-6789"


def test_redaction_of_raw_prompts() -> None:
    req = GenerateRequest(id="r", params=GenerationParams(max_tokens=5), prompt="to bob@example.org")
    out = apply_input(req, scan_request(req), Obligations(redact=Redaction(("EMAIL_ADDRESS",), "mask")), b"k")
    assert out.prompt == "to " + "*" * len("bob@example.org")


def test_block_denies_only_when_present() -> None:
    ob = Obligations(redact=Redaction(("US_SSN",), "block"))
    with pytest.raises(PermissionDenied) as err:
        apply_input(CHAT, scan_request(CHAT), ob, b"k")
    assert err.value.code == "sensitive_data_blocked"
    assert "123-45" not in err.value.message
    clean = GenerateRequest(id="r", params=GenerationParams(max_tokens=5), prompt="nothing here")
    assert apply_input(clean, scan_request(clean), ob, b"k").prompt == "nothing here"


def test_output_redaction_and_block() -> None:
    text = "call 123-45-6789"
    assert (
        apply_output(text, find(text), Obligations(redact=Redaction(("US_SSN",), "remove")), b"k") == "call "
    )
    with pytest.raises(PermissionDenied):
        apply_output(text, find(text), Obligations(redact=Redaction(("US_SSN",), "block")), b"k")
    assert apply_output(text, find(text), Obligations(), b"k") == text


def test_numbered_placeholders_are_stable_across_messages() -> None:
    from gateway.pseudonym import Pseudonymizer
    from gateway.types import ChatMessage

    req = replace(
        CHAT,
        messages=(
            ChatMessage("user", "I am jane@example.com"),
            ChatMessage("assistant", "Hello!"),
            ChatMessage("user", "again: jane@example.com, and bob@example.org"),
        ),
    )
    ob = Obligations(redact=Redaction(("EMAIL_ADDRESS",), "placeholder", restore=True))
    pseudo = Pseudonymizer()
    out = apply_input(req, scan_request(req), ob, b"k", pseudo)
    assert out.messages is not None
    assert [m.content for m in out.messages] == [
        "I am <EMAIL_ADDRESS_1>",
        "Hello!",
        "again: <EMAIL_ADDRESS_1>, and <EMAIL_ADDRESS_2>",
    ]
    assert pseudo.restore(out.messages[2].content) == req.messages[2].content  # type: ignore[index]
