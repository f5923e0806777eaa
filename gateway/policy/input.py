"""Build the policy input document (pure). The contract is documented in docs/policy.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.types import Principal


@dataclass(frozen=True)
class RequestSummary:
    """What policy sees of a request: never prompt text."""

    endpoint: str  # "chat.completions" | "completions" | "models.list"
    model: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    message_count: int = 0


def policy_input(principal: Principal, request: RequestSummary, time: str) -> dict[str, Any]:
    return {
        "principal": {
            "id": principal.id,
            "name": principal.name,
            "tenant": principal.tenant,
            "roles": list(principal.roles),
            "auth_method": principal.auth_method,
        },
        "request": {
            "endpoint": request.endpoint,
            "model": request.model,
            "max_tokens": request.max_tokens,
            "stream": request.stream,
            "message_count": request.message_count,
        },
        "time": time,
    }
