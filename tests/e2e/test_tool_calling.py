"""Tool calling and content-part arrays through the official openai client, a real gateway and
worker: tool-call arguments are scanned like message text, and the audit trail says so."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

EMAIL = "tool.canary.7f3a@example.com"
CARD = "4111 1111 1111 1111"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "book_flight",
            "description": "Book a flight and mail the receipt",
            "parameters": {
                "type": "object",
                "properties": {"email": {"type": "string"}, "card": {"type": "string"}},
                "required": ["email", "card"],
            },
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]
CONVERSATION: list[Any] = [
    {"role": "system", "content": "You book flights."},
    {"role": "user", "content": "Book the early flight."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "book_flight", "arguments": json.dumps({"email": EMAIL, "card": CARD})},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "booked, seat 12A"},
]
# request_texts order: each message's content, then its tool calls' arguments.
ARGUMENTS_TEXT = 3  # system 0, user 1, assistant content 2, its arguments 3, tool result 4


def test_tool_call_arguments_are_scanned_redacted_and_audited(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="demo",
        messages=CONVERSATION,
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
        max_tokens=8,
        temperature=0,
    )
    resp = raw.parse()
    assert raw.status_code == 200
    message = resp.choices[0].message
    assert isinstance(message.content, str)
    assert message.tool_calls is None  # responses are text only

    entry = audit_reader.entry(gateway.home, raw.headers["x-request-id"])
    assert entry is not None
    assert (entry["decision"], entry["status"]) == ("allow", 200)
    # (Whatever else a configured NER scanner finds, the pattern entities are in the arguments.)
    found = json.loads(entry["findings"])["input"]
    in_arguments = {f["type"] for f in found if f["text"] == ARGUMENTS_TEXT}
    assert {"CREDIT_CARD", "EMAIL_ADDRESS"} <= in_arguments
    counts = json.loads(entry["policy_input"])["pii"]["findings"]
    assert (counts["CREDIT_CARD"], counts["EMAIL_ADDRESS"]) == (1, 1)
    redact = json.loads(entry["obligations"])["redact"]
    assert set(redact["entities"]) >= {"CREDIT_CARD", "EMAIL_ADDRESS"}
    for path in gateway.home.glob("audit.db*"):
        assert EMAIL.encode() not in path.read_bytes()


def test_tool_calling_streams(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model="demo",
        messages=CONVERSATION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
    assert all(c.choices[0].delta.tool_calls is None for c in chunks if c.choices)


def test_content_part_arrays_are_joined(gateway: Gateway) -> None:
    client = gateway.client()
    parts = client.chat.completions.create(
        model="demo",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello there, "},
                    {"type": "text", "text": "who are you?"},
                ],
            }
        ],
        max_tokens=10,
        temperature=0,
    )
    plain = client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Hello there, who are you?"}],
        max_tokens=10,
        temperature=0,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage is not None and plain.usage is not None
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_image_parts_are_refused_as_not_supported(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.client().chat.completions.create(
            model="demo",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                }
            ],
            max_tokens=4,
        )
    assert (err.value.code, err.value.param) == ("unsupported_value", "messages.0.content.1.type")
    assert "not supported" in err.value.message


def test_bad_tool_requests_name_the_parameter(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="demo",
            messages=CONVERSATION,
            tools=TOOLS,
            tool_choice="always",
            max_tokens=4,
        )
    assert (err.value.code, err.value.param) == ("invalid_value", "tool_choice")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="demo",
            messages=CONVERSATION,
            tools=[{"type": "function", "function": {"name": "book flight"}}],
            max_tokens=4,
        )
    assert (err.value.code, err.value.param) == ("invalid_value", "tools.0.function.name")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="demo", messages=[*CONVERSATION[:3], {"role": "tool", "content": "x"}], max_tokens=4
        )
    assert (err.value.code, err.value.param) == ("missing_required_parameter", "messages.3.tool_call_id")
