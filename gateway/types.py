"""Shared value types: the bottom layer every llmos package may import.

This module imports nothing from llmos. Values are frozen dataclasses, built once at a
boundary (HTTP parsing, key lookup, the worker protocol) and passed inward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "user", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "user", "auditor")

FinishReason = Literal["stop", "length"]

# An audit entry records a whole request ("complete"), or, for a stream, its start (written
# before the first byte is sent) and its end (the outcome, token counts, response digest).
AuditPhase = Literal["complete", "stream_start", "stream_end"]
AUDIT_PHASES: tuple[AuditPhase, ...] = ("complete", "stream_start", "stream_end")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the result of authentication."""

    id: str  # stable, non-secret identifier, e.g. "key:3f2a9c0d1e4b5a69"
    name: str
    tenant: str
    roles: tuple[str, ...]
    auth_method: str  # "api_key" today; "oidc" and "mtls" later


@dataclass(frozen=True)
class Reason:
    """One reason behind a policy decision, with a stable machine code."""

    code: str
    message: str


@dataclass(frozen=True)
class Decision:
    """A policy decision: allow or deny, with reasons (deny reasons when denied)."""

    allow: bool
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerateRequest:
    """What the gateway asks a worker for: a chat (messages) or a raw prompt, never both."""

    id: str
    params: GenerationParams
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class TokenEvent:
    """A piece of generated text (may span several tokens or be empty)."""

    text: str


@dataclass(frozen=True)
class DoneEvent:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


GenerateEvent = TokenEvent | DoneEvent


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class AuditRecord:
    """What the pipeline reports to the audit log for one request (no raw prompt text)."""

    request_id: str
    time: str  # RFC 3339, UTC
    principal_id: str
    tenant: str
    endpoint: str
    model: str | None
    decision: Literal["allow", "deny", "invalid", "error"]
    status: int
    reasons: tuple[str, ...] = ()  # reason codes
    policy_digest: str | None = None
    request_digest: str | None = None
    response_digest: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    phase: AuditPhase = "complete"
