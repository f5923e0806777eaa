"""The OpenAI wire format of an upstream API, pure: what llmos sends, what it accepts back.

- :func:`request_body`: a :class:`GenerateRequest` (already redacted) as a chat or completions
  request body for the upstream model name; streams ask for usage (``stream_options``).
- :func:`parse_answer` and :func:`parse_chunk`: a non-streamed answer, and one SSE ``data:``
  payload of a stream, checked; anything else raises :class:`UpstreamFormatError`.
- :class:`SseDecoder`: bytes of an SSE stream to its ``data`` payloads.
- :func:`status_error`: an upstream HTTP error status as the client's OpenAI error: the upstream's
  body is never passed on (it may name the upstream account or echo the request).
- :func:`retry_delay`: how long to wait before the next attempt, or None to give up.

Answers with tool calls are refused (``UpstreamFormatError``): the gateway's answers carry text
only, as its own models' do (docs/upstreams.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from gateway.errors import ApiError, BadGateway, InvalidRequest, ServiceUnavailable
from gateway.types import ChatMessage, FinishReason, GenerateRequest

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_TO_CLIENT_S = 60


TOOL_CALLS = "the upstream answered with tool calls, which the gateway does not relay"


class UpstreamFormatError(Exception):
    """The upstream answered with something that is not a usable OpenAI answer."""


@dataclass(frozen=True)
class Answer:
    """A non-streamed answer, or one stream chunk's part of it (``finish``/usage when present)."""

    text: str
    finish: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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
    if value in ("tool_calls", "function_call"):
        raise UpstreamFormatError(TOOL_CALLS)
    if not isinstance(value, str):
        raise UpstreamFormatError("finish_reason is not a string")
    return "length" if value == "length" else "stop"  # stop, content_filter, eos, ...: it ended


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


def _choice_text(choice: Any, chat: bool, *, delta: bool) -> tuple[str, FinishReason | None]:
    if not isinstance(choice, dict):
        raise UpstreamFormatError("a choice is not an object")
    finish = _finish(choice.get("finish_reason"))
    if not chat:
        text = choice.get("text")
    else:
        message = choice.get("delta" if delta else "message")
        if message is None and delta:
            return "", finish
        if not isinstance(message, dict):
            raise UpstreamFormatError("a choice has no message")
        if message.get("tool_calls") or message.get("function_call"):
            raise UpstreamFormatError(
                "the upstream answered with tool calls, which the gateway does not relay"
            )
        text = message.get("content")
        if text is None:  # a refusal is the model's answer too
            text = message.get("refusal")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise UpstreamFormatError("a choice's text is not a string")
    return text, finish


def parse_answer(data: bytes, chat: bool) -> Answer:
    """A non-streamed answer (``chat.completion`` or ``text_completion``): its first choice."""
    value = _object(data)
    choices = value.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UpstreamFormatError("the answer has no choices")
    text, finish = _choice_text(choices[0], chat, delta=False)
    usage = value.get("usage")
    return Answer(text, finish or "stop", _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


def parse_chunk(payload: str, chat: bool) -> Answer:
    """One stream chunk's ``data:`` payload (not ``[DONE]``): its text, finish and usage if any."""
    value = _object(payload)
    choices = value.get("choices") or []
    if not isinstance(choices, list):
        raise UpstreamFormatError("a chunk's choices are not a list")
    text, finish = _choice_text(choices[0], chat, delta=True) if choices else ("", None)
    usage = value.get("usage")
    return Answer(text, finish, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"))


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
