"""Build the policy input documents (pure). The contract is documented in docs/policy.md and
its JSON schemas in policies/schema/. The documents never hold prompt or output text: only
counts of sensitive findings by type."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    estimated_input_tokens: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, stop_count, seed


@dataclass(frozen=True)
class ModelInfo:
    """What policy sees of the model: its name and the labels the operator gave it."""

    name: str
    labels: tuple[str, ...] = ()


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def clock(time: str) -> dict[str, Any] | None:
    """The UTC hour and weekday of an RFC 3339 time, for time-window rules (null if unparsable)."""
    try:
        moment = datetime.fromisoformat(time)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    moment = moment.astimezone(UTC)
    return {"hour": moment.hour, "weekday": _WEEKDAYS[moment.weekday()]}


def estimate_tokens(text_chars: int) -> int:
    """A cheap pre-tokenisation estimate (about 4 characters per token); the worker counts exactly."""
    return (text_chars + 3) // 4


def input_document(
    principal: Principal,
    request: RequestSummary,
    *,
    time: str,
    client_address: str | None = None,
    model: ModelInfo | None = None,
    findings: dict[str, int] | None = None,
    risk: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The ``input`` phase document: decided before anything is generated."""
    counts = dict(findings or {})
    return {
        "phase": "input",
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
            "estimated_input_tokens": request.estimated_input_tokens,
            "parameters": dict(request.parameters),
        },
        "model": None if model is None else {"name": model.name, "labels": list(model.labels)},
        "pii": {"findings": counts, "total": sum(counts.values())},
        "risk": dict(risk or {}),
        "time": time,
        "clock": clock(time),
        "client": {"address": client_address},
    }


def output_document(
    base: dict[str, Any], *, findings: dict[str, int], completion_tokens: int, finish_reason: str | None
) -> dict[str, Any]:
    """The ``output`` phase document: the input document plus what the model produced so far
    (``finish_reason`` is null while a stream is still being generated)."""
    counts = dict(findings)
    return {
        **base,
        "phase": "output",
        "output": {
            "findings": counts,
            "total": sum(counts.values()),
            "completion_tokens": completion_tokens,
            "finish_reason": finish_reason,
        },
    }


def for_audit(document: dict[str, Any]) -> dict[str, Any]:
    """The document as recorded in the audit trail: the client address cut to its network
    (/24 for IPv4, /48 for IPv6), so the trail keeps no full IP address."""
    client = document.get("client") or {}
    address = client.get("address")
    if not address:
        return document
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        network = None
    else:
        prefix = 24 if ip.version == 4 else 48
        network = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
    return {**document, "client": {**client, "address": network}}
