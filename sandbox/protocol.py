"""The gateway <-> worker wire protocol: length-prefixed JSON frames over a Unix socket.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON, which must be
an object. Messages:

    worker -> gateway
        {"type": "ready", "model": str, "context_length": int, "pid": int, "isolation": {...}}
        {"type": "token", "id": str, "text": str}
        {"type": "done", "id": str, "finish_reason": "stop"|"length",
         "prompt_tokens": int, "completion_tokens": int}
        {"type": "error", "id": str, "code": str, "message": str}
        {"type": "explanation", "id": str, "status": "ok", "attribution": {...}}
        {"type": "explanation", "id": str, "status": "not_applicable"|"skipped"|"failed",
         "reason": str}                                        after "done", only when asked
        {"type": "fatal", "message": str}                      loading failed; the worker exits
    gateway -> worker
        {"type": "generate", "id": str, "messages": [message] | null, "prompt": str | null,
         "params": {max_tokens, temperature, top_p, stop, seed},
         "tools": [{"name": str, "description": str | null, "parameters": str | null,
                    "strict": bool | null}],                      (parameters: JSON Schema text)
         "tool_choice": {"mode": "none"|"auto"|"required"|"function", "function": str | null} | null,
         "parallel_tool_calls": bool | null,
         "explain": {AttributionSettings} | null}              attribute the answer afterwards
        message = {"role": str, "content": str, "name": str | null, "tool_call_id": str | null,
                   "tool_calls": [{"id": str, "name": str, "arguments": str}]}
        {"type": "cancel", "id": str}
        {"type": "shutdown"}

Tools, a tool choice and ``parallel_tool_calls`` come only with messages (a chat). The tool
fields (per request and per message) may be absent, which means none; when present they are
checked as strictly as the others.

Every generate is answered by exactly one terminal frame (done or error, including error code
``cancelled`` for a cancelled request), so both sides can count outstanding requests. A
generate that asked for ``explain`` and ended with ``done`` is later answered by exactly one
``explanation`` frame too (the attribution, or why there is none: ``sandbox.explaining``);
it is not a terminal frame and may come after other requests' frames.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from collections.abc import Iterator
from typing import Any

from gateway.errors import WorkerError
from gateway.jsonsafe import JsonRejected, loads_strict
from gateway.types import (
    TOOL_CHOICE_MODES,
    ChatMessage,
    DoneEvent,
    FinishReason,
    GenerateEvent,
    GenerateRequest,
    GenerationParams,
    TokenEvent,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")

Frame = dict[str, Any]


class ProtocolError(WorkerError):
    """A malformed frame or message crossed the worker channel."""


def encode_frame(obj: Frame) -> bytes:
    """Serialise one message; refuses non-objects and frames over the size limit."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(obj).__name__}")
    try:
        payload = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"frame is not serialisable as JSON: {exc}") from exc
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return _HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> Frame:
    """Parse the body of one frame into a dict."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(obj).__name__}")
    return obj


def _check_length(length: int) -> None:
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")


class FrameDecoder:
    """Incremental decoder: feed any chunking of the byte stream, get whole frames back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Frame]:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            _check_length(length)
            end = _HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield decode_payload(payload)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF means a torn frame)."""
        return len(self._buffer)


# -- asyncio side (gateway) ---------------------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """Read one frame; ``None`` on a clean EOF between frames."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("channel closed inside a frame header") from exc
        return None
    (length,) = _HEADER.unpack(header)
    _check_length(length)
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("channel closed inside a frame") from exc
    return decode_payload(payload)


async def write_frame(writer: asyncio.StreamWriter, obj: Frame) -> None:
    writer.write(encode_frame(obj))
    await writer.drain()


# -- blocking side (worker) ---------------------------------------------------------------------


def send_frame(sock: socket.socket, obj: Frame) -> None:
    sock.sendall(encode_frame(obj))


def recv_frames(sock: socket.socket, chunk_size: int = 65536) -> Iterator[Frame]:
    """Yield frames until the peer closes the channel; a torn final frame is an error."""
    decoder = FrameDecoder()
    while True:
        data = sock.recv(chunk_size)
        if not data:
            if decoder.pending_bytes:
                raise ProtocolError("channel closed inside a frame")
            return
        yield from decoder.feed(data)


# -- conversions between frames and gateway.types ----------------------------------------------


def _field(frame: Frame, key: str, kind: type | tuple[type, ...]) -> Any:
    value = frame.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):  # no booleans anywhere in the protocol
        raise ProtocolError(f"field {key!r} of a {frame.get('type')!r} frame is missing or mistyped")
    return value


def _optional(frame: Frame, key: str, kind: type) -> Any:
    """A field that is absent or null (None) or of ``kind`` (a boolean only where ``kind`` is bool)."""
    value = frame.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"field {key!r} is mistyped")
    return value


def _message_to_frame(m: ChatMessage) -> Frame:
    return {
        "role": m.role,
        "content": m.content,
        "name": m.name,
        "tool_call_id": m.tool_call_id,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls],
    }


def _message_from_frame(m: Any) -> ChatMessage:
    if not isinstance(m, dict):
        raise ProtocolError("each message must be an object")
    calls = _optional(m, "tool_calls", list) or []
    for c in calls:
        if not isinstance(c, dict):
            raise ProtocolError("each tool call must be an object")
    return ChatMessage(
        role=_field(m, "role", str),
        content=_field(m, "content", str),
        tool_calls=tuple(
            ToolCall(
                id=_field(c, "id", str), name=_field(c, "name", str), arguments=_field(c, "arguments", str)
            )
            for c in calls
        ),
        tool_call_id=_optional(m, "tool_call_id", str),
        name=_optional(m, "name", str),
    )


def _tool_from_frame(t: Any) -> ToolSpec:
    if not isinstance(t, dict):
        raise ProtocolError("each tool must be an object")
    name = _field(t, "name", str)
    parameters = _optional(t, "parameters", str)
    if not name:
        raise ProtocolError("a tool needs a name")
    if parameters is not None:
        try:
            schema = loads_strict(parameters)
        except JsonRejected as exc:
            raise ProtocolError(f"tool parameters are not strict JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise ProtocolError("tool parameters must be a JSON object")
    return ToolSpec(
        name=name,
        description=_optional(t, "description", str),
        parameters=parameters,
        strict=_optional(t, "strict", bool),
    )


def _tool_choice_from_frame(frame: Frame, tools: tuple[ToolSpec, ...]) -> ToolChoice | None:
    raw = _optional(frame, "tool_choice", dict)
    if raw is None:
        return None
    mode = raw.get("mode")
    function = _optional(raw, "function", str)
    if mode not in TOOL_CHOICE_MODES:
        raise ProtocolError(f"unknown tool_choice mode {mode!r}")
    if (mode == "function") != (function is not None):
        raise ProtocolError("tool_choice names a function exactly when its mode is 'function'")
    if function is not None and function not in {t.name for t in tools}:
        raise ProtocolError("tool_choice names a function that is not among the tools")
    return ToolChoice(mode=mode, function=function)


def request_to_frame(wire_id: str, request: GenerateRequest) -> Frame:
    params = request.params
    choice = request.tool_choice
    return {
        "type": "generate",
        "id": wire_id,
        "messages": (None if request.messages is None else [_message_to_frame(m) for m in request.messages]),
        "prompt": request.prompt,
        "params": {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop),
            "seed": params.seed,
        },
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters, "strict": t.strict}
            for t in request.tools
        ],
        "tool_choice": None if choice is None else {"mode": choice.mode, "function": choice.function},
        "parallel_tool_calls": request.parallel_tool_calls,
        **({} if request.explain is None else {"explain": dict(request.explain)}),
    }


def request_from_frame(frame: Frame) -> GenerateRequest:
    """Parse and check a generate frame (types and ranges); raises ProtocolError."""
    request_id = _field(frame, "id", str)
    raw_params = _field(frame, "params", dict)
    max_tokens = _field(raw_params, "max_tokens", int)
    temperature = float(_field(raw_params, "temperature", (int, float)))
    top_p = float(_field(raw_params, "top_p", (int, float)))
    stop = _field(raw_params, "stop", list)
    seed = raw_params.get("seed")
    if max_tokens < 1:
        raise ProtocolError("max_tokens must be at least 1")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ProtocolError("temperature must be a finite number >= 0")
    if not (0 < top_p <= 1):
        raise ProtocolError("top_p must be in (0, 1]")
    if not all(isinstance(s, str) and s for s in stop):
        raise ProtocolError("stop must be a list of non-empty strings")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ProtocolError("seed must be an integer or null")
    messages = frame.get("messages")
    prompt = frame.get("prompt")
    if (messages is None) == (prompt is None):
        raise ProtocolError("a generate frame needs exactly one of messages and prompt")
    chat: tuple[ChatMessage, ...] | None = None
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ProtocolError("messages must be a non-empty list")
        chat = tuple(_message_from_frame(m) for m in messages)
    elif not isinstance(prompt, str):
        raise ProtocolError("prompt must be a string")
    tools = tuple(_tool_from_frame(t) for t in _optional(frame, "tools", list) or [])
    if len({t.name for t in tools}) != len(tools):
        raise ProtocolError("tool names must be unique")
    choice = _tool_choice_from_frame(frame, tools)
    parallel = _optional(frame, "parallel_tool_calls", bool)
    explain = _optional(frame, "explain", dict)  # its members are checked by the explainer
    if chat is None and (tools or choice is not None or parallel is not None):
        raise ProtocolError("tools, tool_choice and parallel_tool_calls come only with messages")
    return GenerateRequest(
        id=request_id,
        params=GenerationParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop), seed=seed
        ),
        messages=chat,
        prompt=prompt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        explain=explain,
    )


def event_to_frame(wire_id: str, event: GenerateEvent) -> Frame:
    if isinstance(event, TokenEvent):
        return {"type": "token", "id": wire_id, "text": event.text}
    return {
        "type": "done",
        "id": wire_id,
        "finish_reason": event.finish_reason,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
    }


def event_from_frame(frame: Frame) -> GenerateEvent:
    """Turn a token or done frame into its event; raises ProtocolError for anything else."""
    kind = frame.get("type")
    if kind == "token":
        return TokenEvent(text=_field(frame, "text", str))
    if kind == "done":
        reason = frame.get("finish_reason")
        if reason not in ("stop", "length"):
            raise ProtocolError(f"unknown finish_reason {reason!r}")
        finish: FinishReason = "stop" if reason == "stop" else "length"
        return DoneEvent(
            finish_reason=finish,
            prompt_tokens=_field(frame, "prompt_tokens", int),
            completion_tokens=_field(frame, "completion_tokens", int),
        )
    raise ProtocolError(f"expected a token or done frame, got {kind!r}")


def error_frame(wire_id: str, code: str, message: str) -> Frame:
    return {"type": "error", "id": wire_id, "code": code, "message": message}
