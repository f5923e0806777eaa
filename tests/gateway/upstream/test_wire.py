"""gateway.upstream.wire: request bodies, answers, stream chunks, SSE decoding, retry delays and
the errors a client sees for an upstream's failures (never the upstream's body)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadGateway, InvalidRequest, ServiceUnavailable
from gateway.types import ChatMessage, GenerateRequest, GenerationParams, ToolCall, ToolChoice, ToolSpec
from gateway.upstream import wire


def chat(**fields: object) -> GenerateRequest:
    base = GenerateRequest(
        id="req_1",
        params=GenerationParams(max_tokens=32, temperature=0.2, stop=("\n\n",), seed=7),
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi [EMAIL_1]")),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_chat_request_body_carries_the_redacted_messages_and_the_parameters() -> None:
    body = wire.request_body(chat(), "gpt-x")
    assert body == {
        "model": "gpt-x",
        "max_tokens": 32,
        "temperature": 0.2,
        "stop": ["\n\n"],
        "seed": 7,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi [EMAIL_1]"}],
    }
    assert wire.path_for(chat()) == "chat/completions"


def test_tools_tool_calls_and_streams_are_sent_in_openai_form() -> None:
    request = chat(
        messages=(
            ChatMessage("assistant", "", tool_calls=(ToolCall("call_1", "lookup", '{"q":1}'),)),
            ChatMessage("tool", "42", tool_call_id="call_1", name="lookup"),
        ),
        tools=(ToolSpec("lookup", "Look up", '{"type":"object"}', True),),
        tool_choice=ToolChoice("function", "lookup"),
        parallel_tool_calls=False,
        stream=True,
    )
    body = wire.request_body(request, "m")
    assert body["messages"] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":1}'}}
            ],
        },
        {"role": "tool", "content": "42", "name": "lookup", "tool_call_id": "call_1"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look up",
                "parameters": {"type": "object"},
                "strict": True,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert body["parallel_tool_calls"] is False
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})


def test_a_raw_prompt_goes_to_completions() -> None:
    request = GenerateRequest(id="r", params=GenerationParams(max_tokens=5), prompt="Once upon")
    assert wire.path_for(request) == "completions"
    assert wire.request_body(request, "m")["prompt"] == "Once upon"
    assert "messages" not in wire.request_body(request, "m")


def answer(message: object, finish: object = "stop", usage: object = None) -> bytes:
    body: dict[str, object] = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def test_answers_are_parsed_with_their_usage() -> None:
    parsed = wire.parse_answer(
        answer({"content": "Hi"}, "length", {"prompt_tokens": 3, "completion_tokens": 2}), True
    )
    assert parsed == wire.Answer("Hi", "length", 3, 2)
    assert wire.parse_answer(answer({"content": None, "refusal": "I can't."}), True).text == "I can't."
    assert wire.parse_answer(answer({"content": "x"}, "content_filter"), True).finish == "stop"
    completion = json.dumps({"choices": [{"text": "done", "finish_reason": None}]}).encode()
    assert wire.parse_answer(completion, False) == wire.Answer("done", "stop", None, None)


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}


def test_an_answer_with_tool_calls() -> None:
    got = wire.parse_answer(
        answer({"content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]}, "tool_calls"), True
    )
    assert got.finish == "tool_calls" and got.text == ""
    assert got.tool_calls == (
        ToolCall("call_1", "lookup", '{"q": "x"}'),
        ToolCall("call_2", "lookup", '{"q": "x"}'),
    )
    # Some servers end a tool-calling answer with "stop": the calls decide.
    assert (
        wire.parse_answer(answer({"content": "ok", "tool_calls": [CALL]}, "stop"), True).finish
        == "tool_calls"
    )
    # Arguments are put in canonical form: escapes spelled out (as the client's are), for the scan.
    escaped = {**CALL, "function": {"name": "lookup", "arguments": '{"to":"jane\\u0040example.com"}'}}
    got = wire.parse_answer(answer({"content": None, "tool_calls": [escaped]}, "tool_calls"), True)
    assert got.tool_calls[0].arguments == '{"to": "jane@example.com"}'


def test_too_many_calls_or_too_much_argument_text_is_refused() -> None:
    many = [{**CALL, "id": f"call_{i}"} for i in range(wire.MAX_TOOL_CALLS + 1)]
    with pytest.raises(wire.UpstreamFormatError, match="at most"):
        wire.parse_answer(answer({"content": None, "tool_calls": many}, "tool_calls"), True)
    big = {**CALL, "function": {"name": "f", "arguments": "x" * (wire.MAX_ARGUMENT_CHARS + 1)}}
    with pytest.raises(wire.UpstreamFormatError, match="over"):
        wire.parse_answer(answer({"content": None, "tool_calls": [big]}, "tool_calls"), True)
    assembler = wire.ToolCallAssembler()
    with pytest.raises(wire.UpstreamFormatError, match="over"):
        for _ in range(3):
            assembler.feed((wire.CallDelta(0, "call_1", "f", "x" * (wire.MAX_ARGUMENT_CHARS // 2)),))


def test_stream_deltas_are_assembled_by_index() -> None:
    a = wire.ToolCallAssembler()
    a.feed((wire.CallDelta(1, "call_b", "second", '{"n"'), wire.CallDelta(0, "call_a", "first", "")))
    a.feed((wire.CallDelta(1, None, None, ": 2}"), wire.CallDelta(0, "call_a", "first", '{"n": 1}')))
    assert a.calls() == (ToolCall("call_a", "first", '{"n": 1}'), ToolCall("call_b", "second", '{"n": 2}'))
    assert wire.ToolCallAssembler().calls() == ()


@pytest.mark.parametrize(
    "deltas",
    [
        (wire.CallDelta(0, "call_1", "f", "{}"), wire.CallDelta(0, "call_2", None, "")),
        (wire.CallDelta(0, "call_1", "f", "{}"), wire.CallDelta(0, None, "g", "")),
        (wire.CallDelta(0, None, "f", "{}"),),
        (wire.CallDelta(0, "call_1", None, "{}"),),
    ],
    ids=["id-changes", "name-changes", "no-id", "no-name"],
)
def test_inconsistent_or_incomplete_stream_calls_are_refused(deltas: tuple[wire.CallDelta, ...]) -> None:
    a = wire.ToolCallAssembler()
    with pytest.raises(wire.UpstreamFormatError):
        for d in deltas:
            a.feed((d,))
        a.calls()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1]",
        json.dumps({"error": {"message": "x"}}).encode(),
        json.dumps({"choices": []}).encode(),
        answer({"content": 5}),
        answer("text"),
        answer({"content": None, "tool_calls": [{"id": "c"}]}, "tool_calls"),
        answer({"content": None, "tool_calls": {"id": "c"}}, "tool_calls"),
        answer({"content": None, "function_call": {"name": "f", "arguments": "{}"}}, "function_call"),
        answer({"content": "x", "tool_calls": [CALL]}, "length"),
        answer({"content": "x"}, 3),
    ],
)
def test_unusable_answers_are_refused(data: bytes) -> None:
    with pytest.raises(wire.UpstreamFormatError):
        wire.parse_answer(data, True)


def test_stream_chunks() -> None:
    def chunk(choices: object, usage: object = None) -> str:
        return json.dumps({"choices": choices, **({"usage": usage} if usage else {})})

    assert wire.parse_chunk(chunk([{"delta": {"role": "assistant", "content": ""}}]), True) == wire.Answer("")
    assert wire.parse_chunk(chunk([{"delta": {"content": "Hel"}}]), True) == wire.Answer("Hel")
    assert wire.parse_chunk(chunk([{"delta": {}, "finish_reason": "stop"}]), True).finish == "stop"
    assert wire.parse_chunk(chunk([], {"prompt_tokens": 4, "completion_tokens": 9}), True) == wire.Answer(
        "", None, 4, 9
    )
    assert wire.parse_chunk(chunk([{"text": "ab", "finish_reason": None}]), False) == wire.Answer("ab")
    assert wire.parse_chunk(chunk([{"delta": {"tool_calls": [{"index": 0}]}}]), True).call_deltas == (
        wire.CallDelta(0),
    )
    with pytest.raises(wire.UpstreamFormatError):
        wire.parse_chunk(chunk([{"delta": {"tool_calls": [{"index": -1}]}}]), True)
    with pytest.raises(wire.UpstreamFormatError):
        wire.parse_chunk(chunk([{"delta": {"tool_calls": [{"index": 0, "id": 7}]}}]), True)
    with pytest.raises(wire.UpstreamFormatError):
        wire.parse_chunk(json.dumps({"error": {"message": "overloaded"}}), True)


def test_sse_events_split_anywhere_are_put_back_together() -> None:
    stream = b'data: {"a":1}\r\n\r\n: keep-alive\n\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n'
    for cut in range(len(stream) + 1):
        decoder = wire.SseDecoder()
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert events == ['{"a":1}', "line1\nline2", "[DONE]"], cut


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
        ),
        max_size=8,
    ),
    st.data(),
)
def test_sse_decoding_does_not_depend_on_how_bytes_arrive(payloads: list[str], data: st.DataObject) -> None:
    stream = b"".join(b"data: " + p.encode() + b"\n\n" for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    decoder, events, start = wire.SseDecoder(), [], 0
    for cut in [*cuts, len(stream)]:
        events += decoder.feed(stream[start:cut])
        start = cut
    assert events == payloads


def test_an_endless_event_is_refused() -> None:
    decoder = wire.SseDecoder(max_event_bytes=100)
    with pytest.raises(wire.UpstreamFormatError):
        decoder.feed(b"data: " + b"x" * 200)


def test_retry_after_and_backoff() -> None:
    assert wire.parse_retry_after("3", 0.0) == 3.0
    assert wire.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10.0
    assert wire.parse_retry_after("soon", 0.0) is None
    assert wire.parse_retry_after(None, 0.0) is None
    assert wire.parse_retry_after("-5", 0.0) == 0.0
    assert wire.retry_delay(1, 0.25, 8.0, None, 1.0) == 0.25
    assert wire.retry_delay(3, 0.25, 8.0, None, 1.0) == 1.0
    assert wire.retry_delay(10, 0.25, 8.0, None, 1.0) == 8.0
    assert wire.retry_delay(1, 0.25, 8.0, None, 0.0) == 0.125  # jitter never below half
    assert wire.retry_delay(1, 0.25, 8.0, 2.0, 1.0) == 2.0  # the upstream's Retry-After wins
    assert wire.retry_delay(1, 0.25, 8.0, 30.0, 1.0) is None  # longer than we wait: give up


@pytest.mark.parametrize(
    ("status", "kind", "code", "client_status"),
    [
        (429, ServiceUnavailable, "upstream_rate_limited", 503),
        (401, BadGateway, "upstream_auth_failed", 502),
        (403, BadGateway, "upstream_auth_failed", 502),
        (404, BadGateway, "upstream_not_found", 502),
        (400, InvalidRequest, "upstream_rejected", 400),
        (422, InvalidRequest, "upstream_rejected", 400),
        (503, ServiceUnavailable, "upstream_unavailable", 503),
        (500, BadGateway, "upstream_error", 502),
        (502, BadGateway, "upstream_error", 502),
    ],
)
def test_upstream_statuses_become_openai_errors(
    status: int, kind: type, code: str, client_status: int
) -> None:
    error = wire.status_error(status, 2.5)
    assert isinstance(error, kind)
    assert (error.code, error.status) == (code, client_status)
    assert str(status) in str(error)
    if client_status == 503:
        assert error.retry_after == 3


def test_a_long_retry_after_is_capped_for_the_client() -> None:
    assert wire.status_error(429, 3600.0).retry_after == wire.MAX_RETRY_AFTER_TO_CLIENT_S


def test_calls_count_only_when_the_model_stopped_to_make_them() -> None:
    with pytest.raises(wire.UpstreamFormatError, match="ended otherwise"):
        wire.parse_answer(answer({"content": None, "tool_calls": [CALL]}, "content_filter"), True)
    # "tool_calls" with no calls is just the end of an answer
    assert wire.parse_answer(answer({"content": "done"}, "tool_calls"), True).finish == "stop"
    assert wire.finish_with_calls(None, None, True) == "tool_calls"
    with pytest.raises(wire.UpstreamFormatError):
        wire.finish_with_calls("length", "length", True)
