"""The OpenAI wire format of an upstream API, pure: what llmos sends, what it accepts back.

- :func:`request_body`: a :class:`GenerateRequest` (already redacted) as a chat or completions
  request body for the upstream model name; streams ask for usage (``stream_options``).
- :func:`parse_answer` and :func:`parse_chunk`: a non-streamed answer, and one SSE ``data:``
  payload of a stream, checked; anything else raises :class:`UpstreamFormatError`.
- :class:`SseDecoder`: bytes of an SSE stream to its ``data`` payloads.
- :func:`status_error`: an upstream HTTP error status as the client's OpenAI error: the upstream's
  body is never passed on (it may name the upstream account or echo the request).
- :func:`retry_delay`: how long to wait before the next attempt, or None to give up.

Tool calls in an answer are relayed (``Answer.tool_calls``; a stream's pieces are put together
by :class:`ToolCallAssembler`), checked as the gateway checks a client's: ids and function
names the client can send back, at most ``MAX_TOOL_CALLS``, arguments in canonical form
(``gateway.toolargs``). The legacy ``function_call`` is refused (``UpstreamFormatError``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from gateway import toolargs
from gateway.api.schemas import MAX_TOOL_CALLS, NAME_PATTERN, TOOL_CALL_ID_PATTERN
from gateway.errors import ApiError, BadGateway, InvalidRequest, ServiceUnavailable
from gateway.types import ChatMessage, FinishReason, GenerateRequest, ToolCall

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_TO_CLIENT_S = 60


MAX_ARGUMENT_CHARS = 1 << 20  # all of one answer's tool-call arguments together
LEGACY_FUNCTION_CALL = "the upstream answered with a legacy function_call, which the gateway does not relay"
_CALL_ID = re.compile(TOOL_CALL_ID_PATTERN)
_NAME = re.compile(NAME_PATTERN)


class UpstreamFormatError(Exception):
    """The upstream answered with something that is not a usable OpenAI answer."""


@dataclass(frozen=True)
class CallDelta:
    """One stream chunk's piece of a tool call: the first piece of a call names its id and
    function, later ones add to its arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Answer:
    """A non-streamed answer, or one stream chunk's part of it (``finish``/usage when present)."""

    text: str
    finish: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # a non-streamed answer's
    call_deltas: tuple[CallDelta, ...] = ()  # a stream chunk's pieces of its tool calls
    raw_finish: str | None = None  # the upstream's own finish_reason (content_filter, ...)


def path_for(request: GenerateRequest) -> str:
    """The upstream endpoint, relative to ``base_url``."""
    return "chat/completions" if request.messages is not None else "completions"


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def request_body(request: GenerateRequest, model: str) -> dict[str, Any]:
    """The body to POST to :func:`path_for` (JSON-serialisable)."""
    p = request.params
    body: dict[str, Any] = {"model": model, "max_tokens": p.max_tokens, "temperature": p.temperature}
    if p.top_p != 1.0:
        body["top_p"] = p.top_p
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if request.messages is not None:
        body["messages"] = [_message(m) for m in request.messages]
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        **({"description": t.description} if t.description is not None else {}),
                        **({"parameters": json.loads(t.parameters)} if t.parameters is not None else {}),
                        **({"strict": t.strict} if t.strict is not None else {}),
                    },
                }
                for t in request.tools
            ]
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.function}}
                if choice.mode == "function"
                else choice.mode
            )
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    else:
        body["prompt"] = request.prompt or ""
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if value == "function_call":
        raise UpstreamFormatError(LEGACY_FUNCTION_CALL)
    if not isinstance(value, str):
        raise UpstreamFormatError("finish_reason is not a string")
    if value == "length":
        return "length"
    if value == "tool_calls":
        return "tool_calls"
    return "stop"  # stop, content_filter, eos, ...: it ended


def _count(usage: Any, key: str) -> int | None:
    if not isinstance(usage, dict):
        return None
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _object(data: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpstreamFormatError("the answer is not JSON") from exc
    if not isinstance(value, dict):
        raise UpstreamFormatError("the answer is not a JSON object")
    if "error" in value:
        raise UpstreamFormatError("the upstream sent an error instead of an answer")
    return value


def tool_call(call_id: Any, name: Any, arguments: str) -> ToolCall:
    """A checked tool call: an id and a function name the client can send back in its next
    request (the gateway's own request rules), the arguments in canonical form."""
    if not isinstance(call_id, str) or not _CALL_ID.match(call_id):
        raise UpstreamFormatError("a tool call's id is missing or not usable")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UpstreamFormatError("a tool call's function name is missing or not usable")
    return ToolCall(id=call_id, name=name, arguments=toolargs.canonical(arguments))


def _calls(value: Any) -> tuple[ToolCall, ...]:
    """A message's ``tool_calls``."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOL_CALLS:
        raise UpstreamFormatError(f"tool_calls is not a list of at most {MAX_TOOL_CALLS}")
    calls, chars = [], 0
    for item in value:
        if not isinstance(item, dict) or item.get("type", "function") != "function":
            raise UpstreamFormatError("a tool call is not a function call")
        function = item.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
            raise UpstreamFormatError("a tool call has no function arguments")
        chars += len(function["arguments"])
        if chars > MAX_ARGUMENT_CHARS:
            raise UpstreamFormatError(f"tool-call arguments are over {MAX_ARGUMENT_CHARS} characters")
        calls.append(tool_call(item.get("id"), function.get("name"), function["arguments"]))
    return tuple(calls)


def _optional_str(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UpstreamFormatError(f"a tool call's {what} is not a string")
    return value


def _call_deltas(value: Any) -> tuple[CallDelta, ...]:
    """A stream chunk's ``delta.tool_calls``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise UpstreamFormatError("a chunk's tool_calls are not a list")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise UpstreamFormatError("a tool-call delta is not an object")
        index = item.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_TOOL_CALLS:
            raise UpstreamFormatError(f"a tool-call delta's index is not in 0..{MAX_TOOL_CALLS - 1}")
        if item.get("type", "function") not in ("function", None):
            raise UpstreamFormatError("a tool call is not a function call")
        function = item.get("function") or {}
        if not isinstance(function, dict):
            raise UpstreamFormatError("a tool-call delta's function is not an object")
        arguments = _optional_str(function.get("arguments"), "arguments") or ""
        out.append(
            CallDelta(
                index,
                _optional_str(item.get("id"), "id"),
                _optional_str(function.get("name"), "name"),
                arguments,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class _Choice:
    text: str
    finish: FinishReason | None
    calls: tuple[ToolCall, ...] = ()
    deltas: tuple[CallDelta, ...] = ()
    raw_finish: str | None = None


def finish_with_calls(raw: str | None, mapped: FinishReason | None, called: bool) -> FinishReason:
    """The finish reason to relay. With tool calls: ``tool_calls``, if the model stopped to call
    them (``tool_calls``, or ``stop`` as some servers say); calls in an answer cut off otherwise
    (``length``: arguments may be incomplete; ``content_filter``) are unusable. Without calls,
    ``tool_calls`` means nothing: ``stop``."""
    if called:
        if raw not in (None, "tool_calls", "stop"):
            raise UpstreamFormatError("an answer with tool calls ended otherwise than by calling them")
        return "tool_calls"
    return "stop" if mapped in (None, "tool_calls") else mapped


def _choice(choice: Any, chat: bool, *, delta: bool) -> _Choice:
    if not isinstance(choice, dict):
        raise UpstreamFormatError("a choice is not an object")
    finish = _finish(choice.get("finish_reason"))
    raw = choice.get("finish_reason")  # a string when finish is not None (checked by _finish)
    calls: tuple[ToolCall, ...] = ()
    deltas: tuple[CallDelta, ...] = ()
    if not chat:
        text = choice.get("text")
    else:
        message = choice.get("delta" if delta else "message")
        if message is None and delta:
            return _Choice("", finish, raw_finish=raw)
        if not isinstance(message, dict):
            raise UpstreamFormatError("a choice has no message")
        if message.get("function_call"):
            raise UpstreamFormatError(LEGACY_FUNCTION_CALL)
        if delta:
            deltas = _call_deltas(message.get("tool_calls"))
        else:
            calls = _calls(message.get("tool_calls"))
        text = message.get("content")
        if text is None:  # a refusal is the model's answer too
            text = message.get("refusal")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise UpstreamFormatError("a choice's text is not a string")
    return _Choice(text, finish, calls, deltas, raw)


def parse_answer(data: bytes, chat: bool) -> Answer:
    """A non-streamed answer (``chat.completion`` or ``text_completion``): its first choice."""
    value = _object(data)
    choices = value.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UpstreamFormatError("the answer has no choices")
    c = _choice(choices[0], chat, delta=False)
    finish = finish_with_calls(c.raw_finish, c.finish, bool(c.calls))
    usage = value.get("usage")
    return Answer(
        c.text, finish, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"), tool_calls=c.calls
    )


def parse_chunk(payload: str, chat: bool) -> Answer:
    """One stream chunk's ``data:`` payload (not ``[DONE]``): its text, finish and usage if any."""
    value = _object(payload)
    choices = value.get("choices") or []
    if not isinstance(choices, list):
        raise UpstreamFormatError("a chunk's choices are not a list")
    c = _choice(choices[0], chat, delta=True) if choices else _Choice("", None)
    usage = value.get("usage")
    return Answer(
        c.text,
        c.finish,
        _count(usage, "prompt_tokens"),
        _count(usage, "completion_tokens"),
        call_deltas=c.deltas,
        raw_finish=c.raw_finish,
    )


class ToolCallAssembler:
    """A stream's tool calls put together from their deltas: the id and function name from the
    pieces that carry them (repeating them is allowed, changing them is not), the arguments
    joined in order. Bounded like a non-streamed answer's."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._arguments: dict[int, list[str]] = {}
        self._chars = 0

    def feed(self, deltas: tuple[CallDelta, ...]) -> None:
        for d in deltas:
            for field, table in (("id", self._ids), ("name", self._names)):
                value = getattr(d, field)
                if value and table.setdefault(d.index, value) != value:
                    raise UpstreamFormatError(f"a tool call's {field} changed during the stream")
            self._arguments.setdefault(d.index, []).append(d.arguments)
            self._chars += len(d.arguments)
            if self._chars > MAX_ARGUMENT_CHARS:
                raise UpstreamFormatError(f"tool-call arguments are over {MAX_ARGUMENT_CHARS} characters")

    def calls(self) -> tuple[ToolCall, ...]:
        """The complete calls, in index order (each checked as in a non-streamed answer)."""
        return tuple(
            tool_call(self._ids.get(i), self._names.get(i), "".join(self._arguments[i]))
            for i in sorted(self._arguments)
        )


class SseDecoder:
    """Server-sent events to their ``data`` payloads (several ``data:`` lines joined by newlines;
    comments and other fields skipped). Bounded: an event over ``max_event_bytes`` raises."""

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        events: list[str] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end].rstrip(b"\r"), self._buffer[end + 1 :]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", errors="replace"))
                    self._data, self._size = [], 0
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                value = value[1:] if value.startswith(b" ") else value
                self._data.append(value)
                self._size += len(value)
        if self._size + len(self._buffer) > self._max:
            raise UpstreamFormatError(f"a stream event is larger than {self._max} bytes")
        return events


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay(
    attempt: int, initial_s: float, max_s: float, retry_after_s: float | None, jitter: float
) -> float | None:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential from
    ``initial_s``, capped at ``max_s``, scaled by ``jitter`` in [0.5, 1]; at least the upstream's
    ``Retry-After``. None when that is longer than ``max_s``: give up and tell the client."""
    if retry_after_s is not None and retry_after_s > max_s:
        return None
    delay = min(max_s, initial_s * 2 ** (attempt - 1)) * min(1.0, max(0.5, jitter))
    return max(delay, retry_after_s or 0.0)


def status_error(status: int, retry_after_s: float | None) -> ApiError:
    """The client's error for an upstream that answered ``status`` (after any retries)."""
    retry = (
        None if retry_after_s is None else max(1, min(MAX_RETRY_AFTER_TO_CLIENT_S, math.ceil(retry_after_s)))
    )
    if status == 429:
        return ServiceUnavailable(
            "The upstream provider is rate limiting this gateway (HTTP 429); try again later.",
            code="upstream_rate_limited",
            retry_after=retry or 1,
        )
    if status in (401, 403):
        return BadGateway(
            f"The gateway could not authenticate to the upstream provider (HTTP {status}).",
            code="upstream_auth_failed",
        )
    if status == 404:
        return BadGateway(
            "The upstream provider does not know this model (HTTP 404).", code="upstream_not_found"
        )
    if status in (400, 413, 422):
        return InvalidRequest(
            f"The upstream provider rejected the request as invalid (HTTP {status}).",
            code="upstream_rejected",
        )
    if status in (408, 503, 504):
        return ServiceUnavailable(
            f"The upstream provider is unavailable (HTTP {status}).",
            code="upstream_unavailable",
            retry_after=retry or 1,
        )
    return BadGateway(f"The upstream provider failed (HTTP {status}).", code="upstream_error")
