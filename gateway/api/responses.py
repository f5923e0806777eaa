"""OpenAI response shapes, built by pure functions."""

from __future__ import annotations

import json
from typing import Any

from gateway.types import FinishReason, ToolCall, Usage


def usage_body(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chat_completion(
    rid: str, model: str, created: int, text: str, finish: FinishReason, usage: Usage
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage_body(usage),
    }


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish: FinishReason | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    if usage is None:
        choices = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    body: dict[str, Any] = {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


def tool_calls_body(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def tool_calls_delta(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """A stream's tool calls, each whole in one delta (clients join deltas by ``index``)."""
    return [{"index": i, **call} for i, call in enumerate(tool_calls_body(calls))]


def add_tool_calls(body: dict[str, Any], calls: tuple[ToolCall, ...]) -> None:
    """A chat completion's message with the functions it calls (content null when empty, as
    OpenAI sends it)."""
    message = body["choices"][0]["message"]
    message["tool_calls"] = tool_calls_body(calls)
    if not message["content"]:
        message["content"] = None


def calls_bytes(calls: tuple[ToolCall, ...]) -> bytes:
    """The tool calls' part of a response digest: nothing when there are none, else a 0xFF byte
    (never in UTF-8 text, so text and calls cannot be confused) and the calls as compact JSON
    ``[[id, name, arguments], ...]`` (docs/audit.md)."""
    if not calls:
        return b""
    rows = [[c.id, c.name, c.arguments] for c in calls]
    return b"\xff" + json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def response_bytes(text: str, calls: tuple[ToolCall, ...]) -> bytes:
    """What a response digest covers: the delivered text, then its tool calls."""
    return text.encode("utf-8") + calls_bytes(calls)


def completion(
    rid: str, model: str, created: int, text: str, finish: FinishReason, usage: Usage
) -> dict[str, Any]:
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": usage_body(usage),
    }


def completion_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    text: str = "",
    finish: FinishReason | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    if usage is None:
        choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
    body: dict[str, Any] = {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


def model_list(names: list[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": "llmos"} for n in names],
    }


def sse(payload: dict[str, Any]) -> bytes:
    return (
        b"data: "
        + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
        + b"\n\n"
    )


SSE_DONE = b"data: [DONE]\n\n"
