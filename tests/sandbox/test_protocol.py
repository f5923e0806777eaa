from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import WorkerError
from gateway.types import (
    ChatMessage,
    DoneEvent,
    GenerateRequest,
    GenerationParams,
    TokenEvent,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from sandbox.protocol import (
    MAX_FRAME_BYTES,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    event_from_frame,
    event_to_frame,
    read_frame,
    recv_frames,
    request_from_frame,
    request_to_frame,
    send_frame,
    write_frame,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=6)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.lists(json_objects, max_size=5), st.lists(st.integers(min_value=0), max_size=20))
def test_frames_survive_any_chunking(objects: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(o) for o in objects)
    decoder = FrameDecoder()
    decoded = [frame for chunk in chunked(stream, cuts) for frame in decoder.feed(chunk)]
    assert decoded == objects
    assert decoder.pending_bytes == 0


def test_frame_layout_is_length_prefixed_utf8_json() -> None:
    data = encode_frame({"text": "é"})
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:].decode("utf-8")) == {"text": "é"}


def test_partial_frame_waits_for_more_bytes() -> None:
    data = encode_frame({"a": 1})
    decoder = FrameDecoder()
    assert list(decoder.feed(data[:-1])) == []
    assert decoder.pending_bytes == len(data) - 1
    assert list(decoder.feed(data[-1:])) == [{"a": 1}]


def header(length: int) -> bytes:
    return struct.pack(">I", length)


@pytest.mark.parametrize(
    "stream",
    [
        header(MAX_FRAME_BYTES + 1),
        header(2) + b"[]",
        header(1) + b"7",
        header(5) + b"{bad:",
        header(2) + b"\xff\xfe",
    ],
    ids=["oversize", "array", "number", "bad-json", "bad-utf8"],
)
def test_decoder_rejects_bad_frames(stream: bytes) -> None:
    with pytest.raises(ProtocolError):
        list(FrameDecoder().feed(stream))


def test_protocol_error_is_a_worker_error() -> None:
    assert issubclass(ProtocolError, WorkerError)


def test_encoder_rejects_oversize_and_non_objects() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame({"text": "x" * MAX_FRAME_BYTES})
    with pytest.raises(ProtocolError):
        encode_frame([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        encode_frame({"x": float("nan")})


params_strategy = st.builds(
    GenerationParams,
    max_tokens=st.integers(min_value=1, max_value=4096),
    temperature=st.floats(min_value=0, max_value=5),
    top_p=st.floats(min_value=0.01, max_value=1),
    stop=st.lists(st.text(min_size=1, max_size=5), max_size=4).map(tuple),
    seed=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)
messages_strategy = st.lists(
    st.builds(ChatMessage, role=st.sampled_from(["system", "user", "assistant"]), content=st.text()),
    min_size=1,
    max_size=4,
).map(tuple)


@given(
    params_strategy,
    st.one_of(messages_strategy.map(lambda m: (m, None)), st.text().map(lambda p: (None, p))),
)
def test_generate_request_round_trips(params: GenerationParams, body: tuple[Any, Any]) -> None:
    messages, prompt = body
    request = GenerateRequest(id="wire-1", params=params, messages=messages, prompt=prompt)
    frame = request_to_frame("wire-1", request)
    wire = FrameDecoder().feed(encode_frame(frame))
    assert request_from_frame(next(wire)) == request


names = st.from_regex(r"[a-zA-Z0-9_-]{1,8}", fullmatch=True)
tool_messages_strategy = st.lists(
    st.builds(
        ChatMessage,
        role=st.sampled_from(["user", "assistant", "tool"]),
        content=st.text(),
        tool_calls=st.lists(st.builds(ToolCall, id=names, name=names, arguments=st.text()), max_size=3).map(
            tuple
        ),
        tool_call_id=st.none() | names,
        name=st.none() | names,
    ),
    min_size=1,
    max_size=4,
).map(tuple)
tools_strategy = st.lists(
    st.builds(
        ToolSpec,
        name=names,
        description=st.none() | st.text(),
        parameters=st.none() | json_objects.map(json.dumps),
        strict=st.none() | st.booleans(),
    ),
    max_size=3,
    unique_by=lambda t: t.name,
).map(tuple)


@st.composite
def tool_requests(draw: st.DrawFn) -> GenerateRequest:
    tools = draw(tools_strategy)
    modes = [ToolChoice("none"), ToolChoice("auto"), ToolChoice("required")]
    choice = draw(st.none() | st.sampled_from(modes + [ToolChoice("function", t.name) for t in tools]))
    return GenerateRequest(
        id="wire-1",
        params=GenerationParams(max_tokens=5),
        messages=draw(tool_messages_strategy),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=draw(st.none() | st.booleans()),
    )


@given(tool_requests())
def test_tool_calling_requests_round_trip(request: GenerateRequest) -> None:
    wire = FrameDecoder().feed(encode_frame(request_to_frame("wire-1", request)))
    assert request_from_frame(next(wire)) == request


def good_generate() -> dict[str, Any]:
    return request_to_frame("r", GenerateRequest(id="r", params=GenerationParams(max_tokens=5), prompt="hi"))


def good_tool_generate() -> dict[str, Any]:
    request = GenerateRequest(
        id="r",
        params=GenerationParams(max_tokens=5),
        messages=(
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "f", '{"a": 1}'),)),
            ChatMessage("tool", "ok", tool_call_id="c1", name="f"),
        ),
        tools=(ToolSpec("f", "does f", '{"type": "object"}', strict=True), ToolSpec("g")),
        tool_choice=ToolChoice("function", "f"),
        parallel_tool_calls=True,
    )
    return request_to_frame("r", request)


def test_a_tool_frame_is_accepted() -> None:
    assert request_from_frame(good_tool_generate()).tool_choice == ToolChoice("function", "f")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("messages", 1, "tool_calls"), {"id": "c1"}),
        (("messages", 1, "tool_calls", 0), "c1"),
        (("messages", 1, "tool_calls", 0, "arguments"), {"a": 1}),
        (("messages", 1, "tool_calls", 0, "id"), 5),
        (("messages", 1, "tool_calls", 0, "name"), True),
        (("messages", 2, "tool_call_id"), 5),
        (("messages", 2, "name"), ["f"]),
        (("tools",), None),
        (("tools",), {"name": "f"}),
        (("tools", 0), "f"),
        (("tools", 0, "name"), ""),
        (("tools", 0, "name"), "g"),  # duplicate
        (("tools", 0, "description"), 5),
        (("tools", 0, "parameters"), {"type": "object"}),  # JSON text, not an object
        (("tools", 0, "parameters"), "{bad"),
        (("tools", 0, "parameters"), "[1]"),
        (("tools", 0, "parameters"), '{"a": NaN}'),
        (("tools", 0, "strict"), "yes"),
        (("tool_choice",), "auto"),
        (("tool_choice", "mode"), "always"),
        (("tool_choice", "mode"), "auto"),  # with a function
        (("tool_choice", "function"), None),  # mode function without one
        (("tool_choice", "function"), "h"),  # not among the tools
        (("parallel_tool_calls",), "yes"),
        (("parallel_tool_calls",), 1),
    ],
)
def test_tool_fields_are_checked(path: tuple[str | int, ...], value: object) -> None:
    frame = good_tool_generate()
    target: Any = frame
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError):
        request_from_frame(frame)


def test_absent_tool_fields_mean_none() -> None:
    frame = good_tool_generate()
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        del frame[key]
    for message in frame["messages"]:
        for key in ("tool_calls", "tool_call_id", "name"):
            del message[key]
    request = request_from_frame(frame)
    assert (request.tools, request.tool_choice, request.parallel_tool_calls) == ((), None, None)
    assert request.messages is not None
    assert all((m.tool_calls, m.tool_call_id, m.name) == ((), None, None) for m in request.messages)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tools", [{"name": "f", "description": None, "parameters": None, "strict": None}]),
        ("tool_choice", {"mode": "auto", "function": None}),
        ("parallel_tool_calls", False),
    ],
)
def test_tools_come_only_with_messages(key: str, value: object) -> None:
    frame = good_generate()
    frame[key] = value
    with pytest.raises(ProtocolError, match="only with messages"):
        request_from_frame(frame)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("params", "max_tokens"), 0),
        (("params", "max_tokens"), True),
        (("params", "max_tokens"), "5"),
        (("params", "temperature"), -0.5),
        (("params", "top_p"), 0),
        (("params", "top_p"), 1.5),
        (("params", "stop"), [""]),
        (("params", "stop"), "x"),
        (("params", "seed"), 1.5),
        (("messages",), [{"role": "user", "content": "hi"}]),  # both messages and prompt
        (("prompt",), None),  # neither
        (("id",), 7),
    ],
)
def test_generate_frame_checks_types_and_ranges(path: tuple[str, ...], value: object) -> None:
    frame = good_generate()
    target = frame
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError):
        request_from_frame(frame)


@pytest.mark.parametrize(
    "event", [TokenEvent("héllo"), TokenEvent(""), DoneEvent("stop", 3, 4), DoneEvent("length", 1, 9)]
)
def test_events_round_trip(event: TokenEvent | DoneEvent) -> None:
    frame = event_to_frame("x", event)
    assert frame["id"] == "x"
    assert event_from_frame(frame) == event


def test_event_from_frame_rejects_unknown_frames() -> None:
    with pytest.raises(ProtocolError):
        event_from_frame(
            {"type": "done", "id": "x", "finish_reason": "eos", "prompt_tokens": 1, "completion_tokens": 1}
        )
    with pytest.raises(ProtocolError):
        event_from_frame({"type": "ready"})
    with pytest.raises(ProtocolError):
        event_from_frame({"type": "token", "id": "x"})


def test_asyncio_helpers_round_trip_over_a_socketpair() -> None:
    async def scenario() -> list[dict[str, Any] | None]:
        left, right = socket.socketpair()
        _reader_l, writer_l = await asyncio.open_unix_connection(sock=left)
        reader_r, writer_r = await asyncio.open_unix_connection(sock=right)
        await write_frame(writer_l, {"type": "token", "text": "a"})
        await write_frame(writer_l, {"type": "shutdown"})
        writer_l.close()
        got = [await read_frame(reader_r), await read_frame(reader_r), await read_frame(reader_r)]
        writer_r.close()
        return got

    assert asyncio.run(scenario()) == [{"type": "token", "text": "a"}, {"type": "shutdown"}, None]


def test_asyncio_reader_reports_a_torn_frame() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(encode_frame({"a": 1})[:-2])
        reader.feed_eof()
        await read_frame(reader)

    with pytest.raises(ProtocolError, match="inside a frame"):
        asyncio.run(scenario())


def test_blocking_helpers_round_trip_and_detect_torn_frames() -> None:
    left, right = socket.socketpair()
    with left, right:
        send_frame(left, {"n": 1})
        send_frame(left, {"n": 2})
        left.sendall(encode_frame({"n": 3})[:3])
        left.shutdown(socket.SHUT_WR)
        frames = recv_frames(right)
        assert next(frames) == {"n": 1}
        assert next(frames) == {"n": 2}
        with pytest.raises(ProtocolError):
            next(frames)
