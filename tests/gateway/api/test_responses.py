from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import responses as R
from gateway.types import Usage

USAGE = Usage(prompt_tokens=5, completion_tokens=7)
USAGE_BODY = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_usage_body() -> None:
    assert R.usage_body(USAGE) == USAGE_BODY
    assert R.usage_body(Usage()) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_chat_completion() -> None:
    assert R.chat_completion("abc", "demo", 1700000000, "Hello", "stop", USAGE) == {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "demo",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE_BODY,
    }


def test_chat_chunk_with_a_delta() -> None:
    assert R.chat_chunk("abc", "demo", 1, delta={"content": "He"}) == {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "demo",
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": {"content": "He"}, "logprobs": None, "finish_reason": None}],
    }


def test_chat_chunk_first_and_final() -> None:
    first = R.chat_chunk("abc", "demo", 1, delta={"role": "assistant", "content": ""})
    final = R.chat_chunk("abc", "demo", 1, finish="length")

    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert final["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert "usage" not in first
    assert "usage" not in final


def test_chat_usage_chunk_has_empty_choices() -> None:
    chunk = R.chat_chunk("abc", "demo", 1, usage=USAGE)

    assert chunk == {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "demo",
        "system_fingerprint": None,
        "choices": [],
        "usage": USAGE_BODY,
    }


def test_completion() -> None:
    assert R.completion("xyz", "demo", 2, "text", "length", USAGE) == {
        "id": "cmpl-xyz",
        "object": "text_completion",
        "created": 2,
        "model": "demo",
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": "text", "logprobs": None, "finish_reason": "length"}],
        "usage": USAGE_BODY,
    }


def test_completion_chunks() -> None:
    piece = R.completion_chunk("xyz", "demo", 2, text="ab")
    final = R.completion_chunk("xyz", "demo", 2, finish="stop")
    usage = R.completion_chunk("xyz", "demo", 2, usage=USAGE)

    assert piece["object"] == "text_completion"
    assert piece["id"] == "cmpl-xyz"
    assert piece["choices"] == [{"index": 0, "text": "ab", "logprobs": None, "finish_reason": None}]
    assert final["choices"] == [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]
    assert usage["choices"] == []
    assert usage["usage"] == USAGE_BODY
    assert "usage" not in piece


def test_model_list() -> None:
    assert R.model_list(["demo", "tiny"], 3) == {
        "object": "list",
        "data": [
            {"id": "demo", "object": "model", "created": 3, "owned_by": "llmos"},
            {"id": "tiny", "object": "model", "created": 3, "owned_by": "llmos"},
        ],
    }
    assert R.model_list([], 3) == {"object": "list", "data": []}


def test_sse_framing() -> None:
    assert R.sse({"a": 1, "b": "é"}) == 'data: {"a":1,"b":"é"}\n\n'.encode()
    assert R.SSE_DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize("text", ["line1\nline2", "\r\n\r\n", "data: [DONE]\n\n", "\u2028\u2029"])
def test_sse_event_is_one_line_whatever_the_text(text: str) -> None:
    frame = R.sse(R.chat_chunk("r", "m", 0, delta={"content": text}))

    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2
    assert b"\r" not in frame


@settings(max_examples=200, deadline=None, database=None)
@given(st.text())
def test_sse_round_trips(text: str) -> None:
    payload = R.chat_chunk("r", "m", 0, delta={"content": text})

    frame = R.sse(payload)

    events = frame.split(b"\n\n")
    assert events[1:] == [b""]
    assert b"\n" not in events[0]
    assert b"\r" not in events[0]
    assert json.loads(events[0].removeprefix(b"data: ").decode("utf-8", errors="surrogatepass")) == payload


def test_the_digest_bytes_cannot_confuse_text_with_tool_calls() -> None:
    from gateway.api.responses import response_bytes
    from gateway.types import ToolCall

    call = ToolCall("call_1", "f", '{"a": 1}')
    with_call = response_bytes("hi", (call,))
    assert with_call.startswith(b"hi\xff") and with_call.count(b"\xff") == 1
    # No text, however crafted, gives those bytes: valid UTF-8 never holds 0xFF.
    assert b"\xff" not in response_bytes('hi\x00[["call_1","f","{\\"a\\": 1}"]]', ())
    assert response_bytes("hi", ()) == b"hi"
