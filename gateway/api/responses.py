"""OpenAI response shapes, built by pure functions."""

from __future__ import annotations

import json
from typing import Any

from gateway.types import FinishReason, Usage


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
    delta: dict[str, str] | None = None,
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
