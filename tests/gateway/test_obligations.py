"""Applying obligations to requests and responses."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gateway.errors import PermissionDenied
from gateway.findings import find
from gateway.obligations import apply_input, apply_output, finding_counts, request_texts, scan_request
from gateway.pseudonym import Pseudonymizer
from gateway.types import (
    ChatMessage,
    GenerateRequest,
    GenerationParams,
    Obligations,
    Redaction,
    RedactOperator,
    ToolCall,
    ToolSpec,
)

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


def test_a_conversation_keeps_its_placeholders_from_turn_to_turn() -> None:
    """Clients resend the history: a value keeps its placeholder in every later turn. (With
    restore, the assistant message the client resends holds the restored value.)"""
    ob = Obligations(redact=Redaction(("EMAIL_ADDRESS",), "placeholder", restore=True))
    history = [ChatMessage("user", "I am jane@example.com"), ChatMessage("assistant", "Hi jane@example.com")]
    turns = [history[:1], [*history, ChatMessage("user", "cc bob@example.org and jane@example.com")]]
    seen = []
    for messages in turns:
        req = replace(CHAT, messages=tuple(messages))
        texts = request_texts(req)
        out = apply_input(req, scan_request(req), ob, b"k", Pseudonymizer(texts))
        assert out.messages is not None
        seen.append([m.content for m in out.messages])
    assert seen[0][0] == seen[1][0] == "I am <EMAIL_ADDRESS_1>"
    assert seen[1][2] == "cc <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1>"


# --- tool calls ----------------------------------------------------------------------------------

ARGS = '{"to": "jane@example.com", "card": "4111 1111 1111 1111", "note": "call 123-45-6789"}'
TOOLS_CHAT = GenerateRequest(
    id="r",
    params=GenerationParams(max_tokens=50),
    messages=(
        ChatMessage("user", "mail jane@example.com please"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_1", "send_mail", ARGS),
                ToolCall("call_2", "lookup", "bob@example.org, not JSON"),
            ),
        ),
        ChatMessage("tool", "sent to bob@example.org", tool_call_id="call_1"),
    ),
    tools=(ToolSpec("send_mail", "Mail jane@example.com's team", '{"type": "object"}'),),
)
EMAIL_AND_CARD = Obligations(redact=Redaction(("EMAIL_ADDRESS", "CREDIT_CARD"), "placeholder", restore=True))


def test_request_texts_are_contents_then_arguments_in_order() -> None:
    assert request_texts(TOOLS_CHAT) == [
        "mail jane@example.com please",
        "",
        ARGS,
        "bob@example.org, not JSON",
        "sent to bob@example.org",
    ]  # tool definitions are the application's schemas: not among them


def test_findings_in_arguments_are_redacted_in_place() -> None:
    pseudo = Pseudonymizer(request_texts(TOOLS_CHAT))
    out = apply_input(TOOLS_CHAT, scan_request(TOOLS_CHAT), EMAIL_AND_CARD, b"k", pseudo)

    assert out.messages is not None
    user, call_message, result = out.messages
    assert user.content == "mail <EMAIL_ADDRESS_1> please"
    assert [c.arguments for c in call_message.tool_calls] == [
        '{"to": "<EMAIL_ADDRESS_1>", "card": "<CREDIT_CARD_1>", "note": "call 123-45-6789"}',
        "<EMAIL_ADDRESS_2>, not JSON",  # not JSON: redacted as plain text
    ]
    assert [(c.id, c.name) for c in call_message.tool_calls] == [
        ("call_1", "send_mail"),
        ("call_2", "lookup"),
    ]
    assert result == ChatMessage("tool", "sent to <EMAIL_ADDRESS_2>", tool_call_id="call_1")
    assert out.tools == TOOLS_CHAT.tools  # schemas are passed on as they are
    assert pseudo.restore(call_message.tool_calls[0].arguments) == ARGS


def _arguments(request: GenerateRequest) -> str:
    assert request.messages is not None
    return request.messages[1].tool_calls[0].arguments


@pytest.mark.parametrize("operator", ["placeholder", "mask", "hash", "remove"])
@pytest.mark.parametrize("numbered", [True, False])
def test_redacted_arguments_remain_valid_json(operator: RedactOperator, numbered: bool) -> None:
    args = (
        '{"to": ["jane@example.com"], "card": 4111111111111111, "quoted": "\\"bob@example.org\\"", "ok": 1}'
    )
    req = replace(
        TOOLS_CHAT,
        messages=(
            ChatMessage("user", "x"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", args),)),
        ),
    )
    ob = Obligations(redact=Redaction(("EMAIL_ADDRESS", "CREDIT_CARD"), operator))
    pseudo = Pseudonymizer(request_texts(req)) if numbered else None

    out = json.loads(_arguments(apply_input(req, scan_request(req), ob, b"k", pseudo)))

    assert out["ok"] == 1
    assert isinstance(out["card"], str)  # a number holding a card number becomes a string
    values = json.dumps(out)
    assert "jane@" not in values and "bob@" not in values and "4111" not in values
    if operator == "placeholder":
        expected = (
            ("<EMAIL_ADDRESS_1>", "<CREDIT_CARD_1>", '"<EMAIL_ADDRESS_2>"')
            if numbered
            else ("<EMAIL_ADDRESS>", "<CREDIT_CARD>", '"<EMAIL_ADDRESS>"')
        )
        assert (out["to"][0], out["card"], out["quoted"]) == expected
    if operator == "mask":
        assert out["to"] == ["*" * len("jane@example.com")]
        assert out["card"] == "*" * 16
    if operator == "hash":
        assert out["to"][0].startswith("<EMAIL_ADDRESS:")
    if operator == "remove":
        assert (out["to"], out["card"], out["quoted"]) == ([""], "", '""')


def test_the_same_value_in_content_and_arguments_gets_one_placeholder() -> None:
    req = replace(
        TOOLS_CHAT,
        messages=(
            ChatMessage("user", "card 4111 1111 1111 1111"),
            ChatMessage(
                "assistant", "", tool_calls=(ToolCall("c", "pay", '{"card": "4111 1111 1111 1111"}'),)
            ),
        ),
    )
    ob = Obligations(redact=Redaction(("CREDIT_CARD",), "hash"))
    out = apply_input(req, scan_request(req), ob, b"k")
    assert out.messages is not None
    tag = out.messages[0].content.removeprefix("card ")
    assert _arguments(out) == '{"card": "' + tag + '"}'


def test_block_applies_to_tool_arguments() -> None:
    req = replace(
        TOOLS_CHAT,
        messages=(
            ChatMessage("user", "book it"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c", "book", '{"ssn": "123-45-6789"}'),)),
        ),
    )
    with pytest.raises(PermissionDenied) as err:
        apply_input(req, scan_request(req), Obligations(redact=Redaction(("US_SSN",), "block")), b"k")
    assert err.value.code == "sensitive_data_blocked"
    assert "123-45" not in err.value.message


def test_findings_must_match_the_texts() -> None:
    with pytest.raises(ValueError, match="4 findings lists for 5 texts"):
        apply_input(TOOLS_CHAT, scan_request(TOOLS_CHAT)[:4], EMAIL_AND_CARD, b"k")


def test_estimated_size_counts_arguments_and_tool_definitions() -> None:
    texts = sum(len(t) for t in request_texts(TOOLS_CHAT))
    tool = len("send_mail") + len("Mail jane@example.com's team") + len('{"type": "object"}')
    assert TOOLS_CHAT.text_chars == texts + tool
