"""Shared value types: the bottom layer every llmos package may import.

This module imports nothing from llmos. Values are frozen dataclasses, built once at a
boundary (HTTP parsing, key lookup, the worker protocol) and passed inward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# Built-in roles: "admin" (administration), "auditor" (audit evidence), "user". Any other role
# name a policy knows is allowed too (the default policy adds "contractor").
Role = Literal["admin", "user", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "user", "auditor")

# The endpoints a request can be for (the policy input's request.endpoint; API key scopes).
ENDPOINTS: tuple[str, ...] = (
    "chat.completions",
    "completions",
    "models.list",
    "admin.policy",
    "admin.keys",
    "admin.auth",
    "admin.workers",
    "admin.models",
    "audit.checkpoint",
    "audit.entries",
    "audit.consistency",
    "audit.search",
    "metrics",
)

FinishReason = Literal["stop", "length", "tool_calls"]  # tool_calls: upstream models only

# An audit entry records a whole request ("complete"), or, for a stream, its start (written
# before the first byte is sent) and its end (the outcome, token counts, response digest).
# "explanation": the entry that commits a request's explanation record (docs/explanations.md).
AuditPhase = Literal["complete", "stream_start", "stream_end", "explanation"]
AUDIT_PHASES: tuple[AuditPhase, ...] = ("complete", "stream_start", "stream_end", "explanation")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the result of authentication."""

    id: str  # stable, non-secret identifier, e.g. "key:3f2a9c0d1e4b5a69"
    name: str
    tenant: str
    roles: tuple[str, ...]
    auth_method: str  # "api_key", "oidc" or "mtls"


@dataclass(frozen=True)
class Reason:
    """One reason behind a policy decision, with a stable machine code."""

    code: str
    message: str


RedactOperator = Literal["placeholder", "mask", "hash", "remove", "block"]
REDACT_OPERATORS: tuple[RedactOperator, ...] = ("placeholder", "mask", "hash", "remove", "block")
ExplainLevel = Literal["none", "summary", "full"]
EXPLAIN_LEVELS: tuple[ExplainLevel, ...] = ("none", "summary", "full")


@dataclass(frozen=True)
class Redaction:
    """Redact these entity types with this operator (``block`` refuses the text instead)."""

    entities: tuple[str, ...]
    operator: RedactOperator = "placeholder"
    # With "placeholder": put the original values back into the model's answer for the caller.
    restore: bool = False


EXPLAIN_METHODS = ("gradient_x_activation", "integrated_gradients", "feature_ablation")


@dataclass(frozen=True)
class ExplainOptions:
    """How to attribute, when the ``explain`` obligation says (None: the configured default)."""

    method: str | None = None  # one of EXPLAIN_METHODS
    steps: int | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Obligations:
    """What an allow decision obliges the gateway to do (see docs/policy.md)."""

    max_tokens: int | None = None  # cap on generated tokens
    allowed_models: tuple[str, ...] | None = None  # models this principal may see and use
    redact: Redaction | None = None  # entities to redact, and how
    route: str | None = None  # serve the request with this model instead
    explain: ExplainLevel = "none"  # model attribution for this request: none, summary or full
    explain_options: ExplainOptions | None = None  # method, steps, token limits (docs/explanations.md)


@dataclass(frozen=True)
class Evidence:
    """One policy rule that held for a decision, and why (for explanations; no prompt text)."""

    rule: str
    detail: str


@dataclass(frozen=True)
class Decision:
    """A policy decision: allow or deny, with reasons (deny reasons when denied), obligations,
    and the evidence: the rules that produced it (optional in a policy's answer)."""

    allow: bool
    reasons: tuple[Reason, ...] = ()
    obligations: Obligations = Obligations()
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class Finding:
    """A sensitive span found in a text: its entity type and position (never its value), and
    which recogniser found it with what confidence (for the audit trail)."""

    type: str
    start: int
    end: int
    recognizer: str = "pattern"
    score: float = 1.0
    context: tuple[str, ...] = ()  # context words that raised the score (explanations; not audited)


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant message made (OpenAI ``tool_calls[]``). ``arguments`` is the
    text the model sees: JSON in canonical form when it is JSON (``gateway.toolargs``)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant messages only
    tool_call_id: str | None = None  # tool messages: the call this result answers
    name: str | None = None  # the participant's name (OpenAI ``name``)


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call (OpenAI ``tools[].function``). ``parameters`` is its JSON
    Schema as JSON text, so that the value stays immutable; None when the client sent none."""

    name: str
    description: str | None = None
    parameters: str | None = None
    strict: bool | None = None


ToolChoiceMode = Literal["none", "auto", "required", "function"]
TOOL_CHOICE_MODES: tuple[ToolChoiceMode, ...] = ("none", "auto", "required", "function")


@dataclass(frozen=True)
class ToolChoice:
    """OpenAI ``tool_choice``: a mode, or (mode ``function``) the one function to call."""

    mode: ToolChoiceMode
    function: str | None = None


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
    # Chat only: the functions the model may call (rendered by the chat template), and how.
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Attribute the answer to the prompt after generating it: explain.types.AttributionSettings
    # as JSON (the worker parses it); None: no attribution (docs/explanations.md).
    explain: Mapping[str, Any] | None = None
    # The client asked for a stream. Workers ignore it; an upstream API is asked the same way.
    stream: bool = False

    def texts(self) -> list[str]:
        """The client's texts the model sees, in order: per message its content, then each of its
        tool calls' arguments; or the raw prompt. Tool definitions are not among them (they are
        the application's schemas; see docs/pii.md)."""
        if self.messages is None:
            return [self.prompt or ""]
        return [t for m in self.messages for t in (m.content, *(c.arguments for c in m.tool_calls))]

    def identifiers(self) -> list[str]:
        """Names and ids the model sees: message names, tool-call ids and function names, the ids
        tool results answer, and the offered tools' names. They cannot be redacted (calls and
        results pair by them), so the gateway scans them and refuses sensitive data in them."""
        out: list[str] = []
        for m in self.messages or ():
            out.extend(x for x in (m.name, m.tool_call_id) if x)
            out.extend(x for c in m.tool_calls for x in (c.id, c.name))
        out.extend(t.name for t in self.tools)
        return out

    @property
    def text_chars(self) -> int:
        """Characters of text the model sees from the request, tool definitions included."""
        tools = sum(len(t.name) + len(t.description or "") + len(t.parameters or "") for t in self.tools)
        return sum(len(t) for t in self.texts()) + tools


@dataclass(frozen=True)
class TokenEvent:
    """A piece of generated text (may span several tokens or be empty)."""

    text: str


@dataclass(frozen=True)
class DoneEvent:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Functions the model called, complete (upstream models; the gateway's own workers answer
    # with text only). Arguments in canonical form (gateway.toolargs).
    tool_calls: tuple[ToolCall, ...] = ()
    # Inside the worker only (never on the wire): the token ids, for an explanation (explain/).
    prompt_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)
    output_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)


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
    policy_input: str | None = None  # JSON of the input-phase policy document (PII-free)
    output_policy_input: str | None = None  # JSON of the output-phase document, when asked
    obligations: str | None = None  # JSON of the input decision's obligations
    output_obligations: str | None = None  # JSON of the (last) output decision's obligations
    auth_method: str = "none"  # how the principal authenticated: api_key, oidc, mtls (none: refused)
    findings: str | None = None  # JSON of the sensitive-data findings: type, offsets, recogniser, score
    model_digest: str | None = None  # sha256 of the signed manifest of the model that served it
    trace_id: str | None = None  # the request's OpenTelemetry trace (32 hex digits); None: not traced
