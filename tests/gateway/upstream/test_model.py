"""gateway.upstream.model: a real HTTP upstream on loopback (tests/fakeupstream.py) answered
through UpstreamModel: answers and streams, retries and backoff, timeouts, errors without the
upstream's body, canaries checked before anything is sent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import UpstreamConfig
from gateway.errors import ApiError
from gateway.types import (
    ChatMessage,
    DoneEvent,
    GenerateEvent,
    GenerateRequest,
    GenerationParams,
    TokenEvent,
    ToolCall,
)
from gateway.upstream.keys import KeySource
from gateway.upstream.model import UpstreamModel
from sandbox.canaries import parse_canaries
from tests.fakeupstream import KEY, FakeUpstream, Reply, fake_upstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as u:
        yield u


def request(stream: bool = False, text: str = "Hello there") -> GenerateRequest:
    return GenerateRequest(
        id="req_abc",
        params=GenerationParams(max_tokens=16, temperature=0.0),
        messages=(ChatMessage("user", text),),
        stream=stream,
    )


def model(base_url: str, slept: list[float] | None = None, **config: Any) -> UpstreamModel:
    async def sleep(s: float) -> None:
        if slept is not None:
            slept.append(s)

    return UpstreamModel(
        "up",
        UpstreamConfig(base_url=base_url, model="gpt-up", **config),
        keys=KeySource(env="K", environ={"K": KEY}),
        sleep=sleep,
        jitter=lambda: 1.0,
    )


def run(m: UpstreamModel, req: GenerateRequest) -> list[GenerateEvent]:
    async def go() -> list[GenerateEvent]:
        try:
            return [e async for e in m.generate(req)]
        finally:
            await m.close()

    return asyncio.run(go())


def failure(m: UpstreamModel, req: GenerateRequest) -> ApiError:
    with pytest.raises(ApiError) as caught:
        run(m, req)
    return caught.value


def test_an_answer_comes_back_as_text_and_usage(upstream: FakeUpstream) -> None:
    events = run(model(upstream.base_url), request())
    assert events == [TokenEvent("Hello from upstream."), DoneEvent("stop", 11, 7)]
    sent = upstream.received[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-up"
    assert sent.body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-request-id"] == "req_abc"
    assert "stream" not in sent.body


def test_a_stream_passes_through_chunk_by_chunk(upstream: FakeUpstream) -> None:
    upstream.default = Reply(text="one two three", finish="length")
    events = run(model(upstream.base_url), request(stream=True))
    assert events == [TokenEvent("one"), TokenEvent(" two"), TokenEvent(" three"), DoneEvent("length", 11, 3)]
    assert upstream.received[0].body["stream_options"] == {"include_usage": True}


def test_without_usage_the_tokens_are_estimated(upstream: FakeUpstream) -> None:
    upstream.default = Reply(text="x" * 40, usage=False)
    done = run(model(upstream.base_url), request(text="y" * 80))[-1]
    assert done == DoneEvent("stop", 20, 10)
    done = run(model(upstream.base_url), request(stream=True, text="y" * 80))[-1]
    assert done == DoneEvent("stop", 20, 10)


def test_busy_upstreams_are_retried_with_backoff(upstream: FakeUpstream) -> None:
    upstream.script = [Reply(status=503), Reply(status=429, headers={"Retry-After": "2"}), Reply(status=502)]
    slept: list[float] = []
    m = model(upstream.base_url, slept, retries=3, backoff_initial_s=0.25)
    assert run(m, request())[0] == TokenEvent("Hello from upstream.")
    assert slept == [0.25, 2.0, 1.0]  # exponential, but never sooner than Retry-After
    assert len(upstream.received) == 4
    assert m.retried == 3


def test_retries_exhausted_answer_503_with_retry_after(upstream: FakeUpstream) -> None:
    upstream.default = Reply(status=429, headers={"Retry-After": "3"})
    slept: list[float] = []
    error = failure(model(upstream.base_url, slept, retries=2), request())
    assert (error.status, error.code, error.retry_after) == (503, "upstream_rate_limited", 3)
    assert len(upstream.received) == 3
    assert slept == [3.0, 3.0]


def test_a_retry_after_longer_than_the_backoff_cap_is_not_waited_for(upstream: FakeUpstream) -> None:
    upstream.default = Reply(status=503, headers={"Retry-After": "120"})
    slept: list[float] = []
    error = failure(model(upstream.base_url, slept, retries=5), request())
    assert (error.status, error.code, error.retry_after) == (503, "upstream_unavailable", 60)
    assert (len(upstream.received), slept) == (1, [])


@pytest.mark.parametrize(
    ("status", "client_status", "code"),
    [(400, 400, "upstream_rejected"), (401, 502, "upstream_auth_failed"), (404, 502, "upstream_not_found")],
)
def test_client_errors_are_not_retried_and_hide_the_upstream_body(
    upstream: FakeUpstream, status: int, client_status: int, code: str
) -> None:
    upstream.default = Reply(status=status)
    error = failure(model(upstream.base_url, retries=3), request())
    assert (error.status, error.code) == (client_status, code)
    assert len(upstream.received) == 1
    assert "acct_42" not in str(error) and "secret" not in str(error)


def test_a_wrong_key_is_an_auth_failure_that_does_not_echo_the_key(upstream: FakeUpstream) -> None:
    m = model(upstream.base_url)
    m.keys = KeySource(env="K", environ={"K": "sk-wrong-key-9999"})
    error = failure(m, request())
    assert (error.status, error.code) == (502, "upstream_auth_failed")
    assert "sk-wrong" not in str(error)


def test_a_silent_upstream_times_out_without_a_second_try(upstream: FakeUpstream) -> None:
    upstream.default = Reply(delay_s=1.0)
    error = failure(model(upstream.base_url, timeout_s=0.2, retries=3), request())
    assert (error.status, error.code) == (504, "upstream_timeout")
    assert len(upstream.received) == 1  # it may be generating: never asked twice


def test_a_stalled_stream_times_out(upstream: FakeUpstream) -> None:
    upstream.default = Reply(text="a b c", chunk_delay_s=1.0)
    error = failure(model(upstream.base_url, timeout_s=0.3), request(stream=True))
    assert (error.status, error.code) == (504, "upstream_timeout")


def test_an_unreachable_upstream_is_retried_then_503() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    slept: list[float] = []
    m = model(f"http://127.0.0.1:{port}/v1", slept, retries=2)
    error = failure(m, request())
    assert (error.status, error.code, error.retry_after) == (503, "upstream_unavailable", 1)
    assert len(slept) == 2


def test_a_stream_cut_off_midway_is_a_502(upstream: FakeUpstream) -> None:
    upstream.default = Reply(text="a b c d e", drop_after=2)
    m = model(upstream.base_url)

    async def go() -> tuple[list[GenerateEvent], ApiError | None]:
        got: list[GenerateEvent] = []
        try:
            async for e in m.generate(request(stream=True)):
                got.append(e)
        except ApiError as exc:
            return got, exc
        finally:
            await m.close()
        return got, None

    got, error = asyncio.run(go())
    assert got == [TokenEvent("a"), TokenEvent(" b")]
    assert error is not None and (error.status, error.code) == (502, "upstream_error")


CALLS = (
    ("call_w1", "get_weather", '{ "city" : "Paris",\n "days": 3 }'),
    ("call_t2", "get_time", '{"zone":"Europe/Paris"}'),
)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_are_relayed_whole_with_canonical_arguments(upstream: FakeUpstream, stream: bool) -> None:
    upstream.default = Reply(text="", calls=CALLS, finish="tool_calls", call_piece=4)
    events = run(model(upstream.base_url), request(stream=stream))
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.finish_reason == "tool_calls"
    assert done.tool_calls == (
        ToolCall("call_w1", "get_weather", '{"city": "Paris", "days": 3}'),
        ToolCall("call_t2", "get_time", '{"zone": "Europe/Paris"}'),
    )
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == ""


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "call",
    [
        {"id": "call 1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_1", "type": "function", "function": {"name": "no spaces", "arguments": "{}"}},
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
        {"id": "call_1", "type": "retrieval", "function": {"name": "f", "arguments": "{}"}},
    ],
    ids=["bad-id", "bad-name", "arguments-not-text", "not-a-function"],
)
def test_tool_calls_the_client_could_not_use_are_a_502(
    upstream: FakeUpstream, stream: bool, call: dict[str, Any]
) -> None:
    upstream.default = Reply(text="", raw_call=call, finish="tool_calls")
    error = failure(model(upstream.base_url), request(stream=stream))
    assert (error.status, error.code) == (502, "upstream_invalid_response")


@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_a_stream_cut_off_while_calling_a_function_is_a_502(upstream: FakeUpstream, finish: str) -> None:
    upstream.default = Reply(text="", calls=CALLS, finish=finish)  # the arguments may be incomplete
    error = failure(model(upstream.base_url), request(stream=True))
    assert (error.status, error.code) == (502, "upstream_invalid_response")


def test_a_legacy_function_call_is_a_502(upstream: FakeUpstream) -> None:
    upstream.default = Reply(
        body='{"choices": [{"message": {"function_call": {"name": "f"}}, "finish_reason": "function_call"}]}'
    )
    error = failure(model(upstream.base_url), request())
    assert (error.status, error.code) == (502, "upstream_invalid_response")
    assert "legacy function_call" in error.message


def test_garbage_is_a_502(upstream: FakeUpstream) -> None:
    upstream.default = Reply(body="<html>oops</html>", status=200)
    error = failure(model(upstream.base_url), request())
    assert (error.status, error.code) == (502, "upstream_invalid_response")
    assert "oops" not in str(error)


def test_a_canary_value_never_leaves_the_gateway(upstream: FakeUpstream) -> None:
    m = model(upstream.base_url)
    m.canaries = parse_canaries("CANARY-7731-XYZ\n", "canaries.txt")
    error = failure(m, request(text="please use CANARY-7731-XYZ"))
    assert (error.status, error.code) == (500, "canary_tripped")
    assert "CANARY" not in str(error)
    assert upstream.received == []


def test_connections_are_pooled(upstream: FakeUpstream) -> None:
    m = model(upstream.base_url)

    async def go() -> None:
        try:
            for _ in range(5):
                assert [e async for e in m.generate(request())][-1] == DoneEvent("stop", 11, 7)
            assert m._session is not None
            connector = m._session.connector
            assert connector is not None
            assert len(connector._conns) == 1  # type: ignore[attr-defined]  # one kept-alive connection
        finally:
            await m.close()

    asyncio.run(go())
