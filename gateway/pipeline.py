"""The request pipeline every API call goes through:

    authenticate -> read & parse body -> resolve model -> key scopes -> rate limit -> policy
    -> generate -> audit

A refused credential (401) is audited too, with the reason and no credential material, at most
``AUTH_FAILURE_AUDIT_PER_MIN`` entries a minute so that a flood cannot fill the trail (the
rest are counted in ``auth_failures``). Every authenticated request is audited whatever its
outcome (allowed, denied, invalid, failed): one ``complete`` entry, written before the
response is sent; or, for a stream, a ``stream_start`` entry written before its first byte
and a ``stream_end`` entry with the outcome. An entry that cannot be written before content
is sent fails the request closed (503).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opentelemetry.trace import Span, Status, StatusCode
from starlette.requests import Request

from gateway.errors import (
    ApiError,
    AuditError,
    GatewayTimeout,
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PolicyError,
    ServiceUnavailable,
    WorkerError,
    WorkerRequestError,
    WorkerTimeout,
    WorkerUnavailable,
)
from gateway.identity import Authenticator, AuthFailure, Caller
from gateway.keys import KEY_PREFIX, ApiKeyStore
from gateway.limits import Limits, LimitsConfig, LimitStore, MemoryLimitStore, Subject, subjects_for
from gateway.logs import ACCESS
from gateway.logs import access as access_log
from gateway.metrics import Metrics, Stopwatch
from gateway.mtls import peer_certificate
from gateway.outputguard import Decide
from gateway.policy.engine import Phase, PolicyEngine
from gateway.policy.input import ModelInfo, RequestSummary, for_audit, input_document, output_document
from gateway.scanner import DisabledScanner, PatternScanner, ScanFailed, Scanner, TextTooLarge, scan_texts
from gateway.tracing import NO_SPAN, Tracing, trace_id
from gateway.types import (
    AuditPhase,
    AuditRecord,
    Decision,
    Evidence,
    Finding,
    GenerateEvent,
    GenerateRequest,
    Obligations,
    Principal,
    Reason,
    Usage,
)

if TYPE_CHECKING:
    from gateway.explanations import Explanations

log = logging.getLogger("llmos.gateway")

AUTH_FAILURE_AUDIT_PER_MIN = 60
INLINE_AUTH_PREFIX = f"Bearer {KEY_PREFIX}"  # API keys are checked on the event loop (see begin)
ANONYMOUS_TENANT = "-"

DecisionLabel = Literal["allow", "deny", "invalid", "error"]


class AuditSink(Protocol):
    async def append_async(self, record: AuditRecord) -> object:
        """Durable on return (``AuditLog``); raises AuditError. Cancelling the caller must not
        lose the entry."""
        ...


class DiscardAudit:
    """No audit trail of requests (``unsafe_disable: [audit]``): entries are dropped."""

    async def append_async(self, record: AuditRecord) -> None:
        return None


class Worker(Protocol):
    @property
    def state(self) -> str: ...

    def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]: ...


@dataclass
class RequestContext:
    request_id: str
    endpoint: str
    caller: Caller
    started: float = field(default_factory=time.monotonic)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    model: str | None = None
    decision: DecisionLabel = "invalid"
    reasons: tuple[str, ...] = ()
    request_digest: str | None = None
    response_digest: str | None = None
    usage: Usage = field(default_factory=Usage)
    policy_input: dict[str, Any] | None = None  # the input-phase document (PII-free)
    output_input: dict[str, Any] | None = None  # the output-phase document, when asked
    obligations: Obligations = field(default_factory=Obligations)
    output_obligations: Obligations | None = None
    # "none": nothing written; "started": a stream's start entry is written; "done": the final
    # entry was written or attempted (never retried: one failed write already cost its timeout).
    audit_state: Literal["none", "started", "done"] = "none"
    # The engine that decides this request, fixed at its first decision: a policy reloaded
    # meanwhile applies to the next request, and the audit entry names the one that decided.
    policy: PolicyEngine | None = None
    policy_digest: str | None = None  # read once too: a remote engine's digest can change
    # The rate-limit subjects this request was admitted against; charged its tokens once, at the end.
    input_findings: list[list[Finding]] = field(default_factory=list)  # per prompt text (audit)
    output_findings: list[Finding] = field(default_factory=list)  # in the delivered text (audit)
    output_call_findings: list[list[Finding]] = field(default_factory=list)  # per tool call made
    limit_subjects: tuple[Subject, ...] = ()
    charged: bool = False
    # For the explanation record (gateway/explanations.py): the rules behind the decisions, the
    # policy's reasons with their messages, the worker's attribution to come or why none was asked.
    evidence: tuple[Evidence, ...] = ()
    output_evidence: tuple[Evidence, ...] = ()
    reason_messages: tuple[Reason, ...] = ()
    explanation: asyncio.Future[Any] | None = None
    explain_skip: tuple[str, str] | None = None
    # The signed manifest of the worker that answered, read when it started answering (during an
    # update the old and the new version both serve for a while).
    model_digest: str | None = None
    # OpenTelemetry (gateway/tracing.py): the request's span and its generation's; no-ops untraced.
    span: Span = NO_SPAN
    worker_span: Span = NO_SPAN

    def engine(self, pipeline: Pipeline) -> PolicyEngine:
        if self.policy is None:
            self.policy = pipeline.policy
            self.policy_digest = self.policy.digest
        return self.policy

    @property
    def principal(self) -> Principal:
        return self.caller.principal

    @property
    def created(self) -> int:
        return int(time.time())


@dataclass
class Pipeline:
    keys: ApiKeyStore
    policy: PolicyEngine
    audit: AuditSink
    workers: dict[str, Worker]
    digest_key: bytes
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    scanner: Scanner = field(default_factory=PatternScanner)
    scan_timeout_s: float = 2.0
    scan_fail_open: frozenset[str] = frozenset()  # endpoints that go unscanned if the scanner fails
    limit_store: LimitStore = field(default_factory=MemoryLimitStore)
    policy_failures: int = 0  # decisions denied because the engine failed (fail-closed count)
    authenticator: Authenticator | None = None  # default: API keys only
    auth_failures: dict[str, int] = field(default_factory=dict)  # refused credentials by reason
    auth_failures_unaudited: int = 0  # refusals beyond the audit budget (counted, not written)
    explanations: Explanations | None = None  # an explanation record per request (docs/explanations.md)
    # False only with ``unsafe_disable: [policy]``: every authenticated request is allowed, with no
    # obligations and no policy evaluation; its audit entry carries the reason ``policy_disabled``.
    policy_enabled: bool = True
    metrics: Metrics = field(default_factory=Metrics)  # Prometheus events (gateway/metrics.py)
    tracing: Tracing = field(default_factory=Tracing)  # OpenTelemetry spans (off by default)

    _detached: set[asyncio.Task[bool]] = field(default_factory=set)
    _failure_window: tuple[int, int] = (0, 0)  # (minute, refusals audited in it)

    def __post_init__(self) -> None:
        if self.authenticator is None:
            self.authenticator = Authenticator(self.keys)
        self.limit_store.on_fail_open(self.metrics.fail_open.labels("limits").inc)

    # -- stages -------------------------------------------------------------------------------
    async def begin(self, request: Request, endpoint: str) -> RequestContext:
        """Authenticate. OIDC tokens and certificates are checked in a thread (a JWKS fetch must
        not stall the event loop); llmos API keys inline. A refusal is counted and audited
        (within budget), then raised."""
        authenticator = self.authenticator or Authenticator(self.keys)
        authorization = request.headers.get("authorization")
        span = self.tracing.start_request(
            "llmos.request",
            request.headers,
            {"llmos.route": endpoint, "llmos.request_id": request.state.request_id},
        )
        try:
            with self.tracing.child(span, "llmos.auth"):
                if authorization is not None and authorization.startswith(INLINE_AUTH_PREFIX):
                    # An llmos API key: one indexed read on a reused SQLite connection (microseconds,
                    # WAL readers never wait), cheaper inline than a hop to a thread and back.
                    caller = authenticator.authenticate(authorization, peer_certificate(request.scope))
                else:
                    caller = await asyncio.to_thread(
                        authenticator.authenticate, authorization, peer_certificate(request.scope)
                    )
        except AuthFailure as exc:
            self._auth_failed(request, endpoint, exc, span)
            raise
        except BaseException as exc:  # e.g. 503 idp_unavailable: no caller to audit, but counted
            status = exc.status if isinstance(exc, ApiError) else 500
            self.metrics.request(endpoint, None, status, "error", 0.0)
            span.set_attributes({"http.response.status_code": status, "llmos.decision": "error"})
            span.end()
            raise
        return RequestContext(
            request_id=request.state.request_id, endpoint=endpoint, caller=caller, span=span
        )

    def _auth_failed(self, request: Request, endpoint: str, exc: AuthFailure, span: Span = NO_SPAN) -> None:
        self.auth_failures[exc.reason] = self.auth_failures.get(exc.reason, 0) + 1
        minute, written = self._failure_window
        now_minute = int(time.monotonic() // 60)
        if now_minute != minute:
            minute, written = now_minute, 0
        if written >= AUTH_FAILURE_AUDIT_PER_MIN:
            self.auth_failures_unaudited += 1
            self.metrics.request(endpoint, None, exc.status, "deny", 0.0)  # counted, not written
            span.set_attributes({"http.response.status_code": exc.status, "llmos.decision": "deny"})
            span.end()
            return
        self._failure_window = (minute, written + 1)
        anonymous = Principal(
            id="anonymous", name="anonymous", tenant=ANONYMOUS_TENANT, roles=(), auth_method=exc.method
        )
        ctx = RequestContext(
            request_id=request.state.request_id,
            endpoint=endpoint,
            caller=Caller(anonymous),
            decision="deny",
            reasons=(f"auth_{exc.reason}",),
            span=span,
        )
        record = self._claim(ctx, exc.status, "complete")
        task = asyncio.get_running_loop().create_task(self._append(ctx, record), name="llmos-audit")
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def digest(self, data: bytes) -> str:
        """Keyed digest of request/response content: provable by the operator, not guessable."""
        return "hmac-sha256:" + hmac.new(self.digest_key, data, hashlib.sha256).hexdigest()

    def route(self, ctx: RequestContext, model: str) -> Worker:
        """Follow a policy's routing obligation to another configured model."""
        worker = self.workers.get(model)
        if worker is None:
            log.error("policy routes to model %r, which is not configured", model)
            raise ServiceUnavailable(
                "Request denied: the policy routes it to a model that is not available.",
                code="route_unavailable",
                retry_after=1,
            )
        ctx.model = model
        return worker

    def worker_for(self, ctx: RequestContext, model: str) -> Worker:
        ctx.model = model
        worker = self.workers.get(model)
        if worker is None:
            raise NotFound(f"The model '{model}' does not exist. See GET /v1/models.", param="model")
        return worker

    async def authorize(
        self,
        ctx: RequestContext,
        summary: RequestSummary,
        *,
        model: ModelInfo | None = None,
        findings: dict[str, int] | None = None,
        client_address: str | None = None,
        rate_limit: bool = True,
    ) -> Obligations:
        """Key scopes, rate limit, then the input decision. Returns the obligations of an allow;
        raises on deny (403), rate limit (429) or engine failure (403/503)."""
        caller = ctx.caller
        if not caller.allows_endpoint(summary.endpoint):
            ctx.decision, ctx.reasons = "deny", ("key_scope_endpoint",)
            raise PermissionDenied(
                f"This API key may not call {summary.endpoint}.", code="key_scope_endpoint"
            )
        if summary.model is not None and not caller.allows_model(summary.model):
            ctx.decision, ctx.reasons = "deny", ("key_scope_model",)
            raise PermissionDenied(
                f"This API key may not use the model '{summary.model}'.",
                code="key_scope_model",
                param="model",
            )
        if rate_limit:
            await self._admit(ctx)
        document = input_document(
            ctx.principal,
            summary,
            time=ctx.time,
            client_address=client_address,
            model=model,
            findings=findings,
        )
        ctx.policy_input = document
        if not self.policy_enabled:
            ctx.decision, ctx.reasons = "allow", (*ctx.reasons, "policy_disabled")
            return ctx.obligations  # the defaults: no obligations
        decision = self._decide(ctx, document, "input")
        ctx.obligations = decision.obligations
        ctx.decision = "allow"
        return decision.obligations

    async def _admit(self, ctx: RequestContext) -> None:
        key = ctx.caller.key
        own = Limits(rpm=key.rpm, tpm=key.tpm, daily_tokens=key.daily_tokens) if key is not None else None
        if own is not None and own.unlimited:
            own = None  # a key without limits of its own gets limits.default_principal
        principal = ctx.principal
        subjects = subjects_for(self.limits, principal.id, own, principal.tenant)
        if not subjects:
            return
        try:
            if isinstance(self.limit_store, MemoryLimitStore):
                self.limit_store.admit(subjects, time.time())
            else:  # a network round trip (Redis): keep it off the event loop
                await asyncio.to_thread(self.limit_store.admit, subjects, time.time())
        except ApiError as exc:  # 429 RateLimited, or 503 when the store fails closed
            ctx.decision, ctx.reasons = "deny", (exc.code,)
            raise
        ctx.limit_subjects = tuple(subjects)

    async def _charge(self, ctx: RequestContext) -> None:
        """Charge the tokens an admitted request used (once, whatever its outcome)."""
        if ctx.charged or not ctx.limit_subjects:
            return
        ctx.charged = True
        tokens = ctx.usage.prompt_tokens + ctx.usage.completion_tokens
        try:
            if isinstance(self.limit_store, MemoryLimitStore):
                self.limit_store.charge(ctx.limit_subjects, tokens, time.time())
            else:
                await asyncio.to_thread(self.limit_store.charge, ctx.limit_subjects, tokens, time.time())
        except Exception:  # the store counts and logs its own errors; never fail a finished request
            log.exception("charging %d tokens failed (request %s)", tokens, ctx.request_id)

    async def scan(self, ctx: RequestContext, texts: Sequence[str]) -> list[list[Finding]]:
        """Findings per text from the configured scanner. A scanner failure denies (503), unless
        the endpoint is one ``pii.fail_open_endpoints`` names: then the texts go unscanned and
        the audit entry says so (reason ``pii_unscanned``)."""
        if isinstance(self.scanner, DisabledScanner):  # unsafe_disable: [pii]
            return [[] for _ in texts]
        try:
            with Stopwatch() as watch, self.tracing.child(ctx.span, "llmos.pii", {"llmos.texts": len(texts)}):
                ctx.input_findings = await scan_texts(self.scanner, texts, self.scan_timeout_s)
            self.metrics.pii_scan_seconds.labels("input").observe(watch.seconds)
            return ctx.input_findings
        except TextTooLarge as exc:
            raise PayloadTooLarge(
                f"A message is too long to be checked for sensitive data: at most {exc.limit} characters"
                " per message.",
                code="message_too_large",
            ) from exc
        except ScanFailed as exc:
            if ctx.endpoint in self.scan_fail_open:
                self.metrics.fail_open.labels("pii_scan").inc()
                log.warning("request %s sent unscanned (fail-open endpoint): %s", ctx.request_id, exc)
                ctx.reasons = (*ctx.reasons, "pii_unscanned")
                return [[] for _ in texts]
            log.error("request %s denied: %s", ctx.request_id, exc)
            ctx.decision, ctx.reasons = "error", ("pii_unavailable",)
            raise ServiceUnavailable(
                "Request denied: the sensitive-data scanner failed.", code="pii_unavailable", retry_after=1
            ) from exc

    def output_decider(self, ctx: RequestContext) -> Decide | None:
        """The output decision for this request's generated text, or None when no output
        policy is configured. The returned callable raises on deny (403) or engine failure."""
        if not self.policy_enabled or not ctx.engine(self).has_output_policy or ctx.policy_input is None:
            return None
        base = ctx.policy_input

        def decide(
            findings: dict[str, int], completion_tokens: int, finish_reason: str | None
        ) -> Obligations:
            document = output_document(
                base, findings=findings, completion_tokens=completion_tokens, finish_reason=finish_reason
            )
            ctx.output_input = document
            obligations = self._decide(ctx, document, "output").obligations
            ctx.output_obligations = obligations
            return obligations

        return decide

    def _decide(self, ctx: RequestContext, document: dict[str, Any], phase: Phase) -> Decision:
        try:
            with Stopwatch() as watch, self.tracing.child(ctx.span, "llmos.policy", {"llmos.phase": phase}):
                decision = ctx.engine(self).decide(document, phase)
            self.metrics.policy_seconds.labels(phase).observe(watch.seconds)
        except PolicyError as exc:
            ctx.decision, ctx.reasons = "error", (*ctx.reasons, exc.code)
            self.policy_failures += 1
            log.error("%s policy failure (request denied): %s", phase, exc)
            if exc.code in ("policy_undefined", "policy_malformed"):
                raise PermissionDenied(
                    "Request denied: the policy gave no valid decision.", code=exc.code
                ) from exc
            raise ServiceUnavailable(
                "Request denied: the policy engine failed.", code="policy_unavailable", retry_after=1
            ) from exc
        ctx.reasons = (*ctx.reasons, *(r.code for r in decision.reasons))
        ctx.reason_messages = (*ctx.reason_messages, *decision.reasons)
        if phase == "input":
            ctx.evidence = decision.evidence
        else:
            ctx.output_evidence = decision.evidence
        if not decision.allow:
            for reason in decision.reasons:
                self.metrics.policy_denials.labels(reason.code).inc()
            ctx.decision = "deny"
            detail = "; ".join(f"{r.message} [{r.code}]" for r in decision.reasons)
            what = "Request denied by policy" if phase == "input" else "Response withheld by output policy"
            raise PermissionDenied(f"{what}: {detail}", code=decision.reasons[0].code)
        return decision

    # -- audit --------------------------------------------------------------------------------
    def record(self, ctx: RequestContext, status: int, phase: AuditPhase = "complete") -> AuditRecord:
        return AuditRecord(
            request_id=ctx.request_id,
            time=ctx.time,
            principal_id=ctx.principal.id,
            auth_method=ctx.principal.auth_method,
            findings=findings_document(ctx.input_findings, ctx.output_findings, ctx.output_call_findings),
            model_digest=ctx.model_digest or self._model_digest(ctx.model),
            trace_id=trace_id(ctx.span),
            tenant=ctx.principal.tenant,
            endpoint=ctx.endpoint,
            model=ctx.model,
            decision=ctx.decision,
            status=status,
            reasons=ctx.reasons,
            policy_digest=ctx.policy_digest if ctx.policy_digest is not None else ctx.engine(self).digest,
            request_digest=ctx.request_digest,
            response_digest=ctx.response_digest,
            prompt_tokens=ctx.usage.prompt_tokens,
            completion_tokens=ctx.usage.completion_tokens,
            latency_ms=int((time.monotonic() - ctx.started) * 1000),
            phase=phase,
            policy_input=_json(for_audit(ctx.policy_input)) if ctx.policy_input else None,
            output_policy_input=_json(for_audit(ctx.output_input)) if ctx.output_input else None,
            obligations=_json(obligations_document(ctx.obligations)) if ctx.policy_input else None,
            output_obligations=(
                _json(obligations_document(ctx.output_obligations)) if ctx.output_obligations else None
            ),
        )

    @staticmethod
    def served_digest(worker: Worker, request_id: str) -> str | None:
        """The manifest digest of the worker answering ``request_id`` (a replica, or one version
        while an update switches); None for echo or unsigned models."""
        served = getattr(worker, "served_digest", None)
        digest = served(request_id) if callable(served) else getattr(worker, "manifest_digest", None)
        return digest if isinstance(digest, str) else None

    def _model_digest(self, model: str | None) -> str | None:
        """The signed manifest of the model serving ``model`` (None for echo or unsigned models)."""
        worker = self.workers.get(model) if model is not None else None
        digest = getattr(worker, "manifest_digest", None)
        return digest if isinstance(digest, str) else None

    async def finish(self, ctx: RequestContext, status: int) -> None:
        """Write the ``complete`` entry of a response before it is sent; 503 if that fails."""
        if not await self._write(ctx, status, "complete"):
            raise _withheld()

    async def start_stream(self, ctx: RequestContext) -> None:
        """Write a stream's ``stream_start`` entry before its first byte; 503 if that fails."""
        if not await self._write(ctx, 200, "stream_start"):
            raise _withheld()

    async def end_stream(self, ctx: RequestContext, status: int) -> bool:
        """Write a stream's ``stream_end`` entry; False if it could not be written."""
        return await self._write(ctx, status, "stream_end")

    async def fail(self, ctx: RequestContext, exc: ApiError) -> None:
        """Record a failed request (or stream); the client gets the original error either way."""
        if exc.code.startswith("upstream_"):  # raised by an upstream model's client (gateway/upstream/)
            self.metrics.upstream_errors.labels(self.metrics.model_label(ctx.model), exc.code).inc()
        if isinstance(exc, PermissionDenied) and ctx.decision == "allow":
            # Refused while enforcing an allow's obligations (redact: block): a denial all the same.
            ctx.decision = "deny"
            if exc.code not in ctx.reasons:
                ctx.reasons = (*ctx.reasons, exc.code)
        if ctx.audit_state == "none":
            await self._write(ctx, exc.status, "complete")
        elif ctx.audit_state == "started":
            await self._write(ctx, exc.status, "stream_end")

    def end_stream_detached(self, ctx: RequestContext, status: int) -> None:
        """Record the end of a stream from a cancelled task (the client went away): the write
        runs in its own task, so it neither blocks the event loop nor dies with the request."""
        if ctx.audit_state != "started":
            return
        record = self._claim(ctx, status, "stream_end")
        task = asyncio.get_running_loop().create_task(self._append(ctx, record), name="llmos-audit")
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def _write(self, ctx: RequestContext, status: int, phase: AuditPhase) -> bool:
        if isinstance(self.audit, DiscardAudit):  # unsafe_disable: [audit]: no record to build
            ctx.audit_state = "started" if phase == "stream_start" else "done"
            if phase != "stream_start":
                self._count(ctx, status)
                self._outcome_on_spans(ctx, status)
                ctx.span.end()
                await self._charge(ctx)
            return True
        return await self._append(ctx, self._claim(ctx, status, phase))

    def _claim(self, ctx: RequestContext, status: int, phase: AuditPhase) -> AuditRecord:
        """Build the record and mark the context, so that no other path writes it again."""
        ctx.audit_state = "started" if phase == "stream_start" else "done"
        if phase in ("complete", "stream_end"):  # the request's outcome: counted once
            self._count(ctx, status)
            self._outcome_on_spans(ctx, status)
        return self.record(ctx, status, phase)

    def start_generation(self, ctx: RequestContext) -> None:
        """The worker (or upstream) call's span, from here to the request's outcome."""
        ctx.worker_span = self.tracing.start_child(
            ctx.span, "llmos.worker", {"llmos.model": self.metrics.model_label(ctx.model)}
        )

    def _outcome_on_spans(self, ctx: RequestContext, status: int) -> None:
        ctx.worker_span.set_attributes(
            {
                "llmos.prompt_tokens": ctx.usage.prompt_tokens,
                "llmos.completion_tokens": ctx.usage.completion_tokens,
            }
        )
        ctx.worker_span.end()
        ctx.span.set_attributes(
            {
                "http.response.status_code": status,
                "llmos.model": self.metrics.model_label(ctx.model),
                "llmos.decision": ctx.decision,
                "llmos.reasons": list(ctx.reasons),
            }
        )
        if status >= 500:
            ctx.span.set_status(Status(StatusCode.ERROR))

    def _count(self, ctx: RequestContext, status: int) -> None:
        m = self.metrics
        elapsed = time.monotonic() - ctx.started
        m.request(ctx.endpoint, ctx.model, status, ctx.decision, elapsed)
        if ACCESS.isEnabledFor(logging.INFO):  # (no fields built for a log level above it)
            access_log(
                {
                    "request_id": ctx.request_id,
                    "principal_id": ctx.principal.id,
                    "tenant": ctx.principal.tenant,
                    "route": ctx.endpoint,
                    "model": m.model_label(ctx.model),  # a configured name: clients choose the string
                    "status": status,
                    "decision": ctx.decision,
                    "reasons": list(ctx.reasons),
                    "latency_ms": int(elapsed * 1000),
                    "trace_id": trace_id(ctx.span),
                }
            )
        m.findings("input", (f.type for found in ctx.input_findings for f in found))
        m.findings("output", (f.type for f in ctx.output_findings))
        m.findings("output", (f.type for found in ctx.output_call_findings for f in found))
        if ctx.explain_skip is not None and ctx.explain_skip[1] != "disabled":
            m.explanations_skipped.labels(ctx.explain_skip[1]).inc()

    async def _append(self, ctx: RequestContext, record: AuditRecord) -> bool:
        if record.phase != "stream_start":
            await self._charge(ctx)
        final = record.phase in ("complete", "stream_end")
        try:
            with (
                Stopwatch() as watch,
                self.tracing.child(ctx.span, "llmos.audit", {"llmos.phase": record.phase}),
            ):
                await self.audit.append_async(record)
            self.metrics.audit_append_seconds.observe(watch.seconds)
        except AuditError as exc:
            ctx.audit_state = "done"
            log.error(
                "audit write failed (request %s, %s, status %d): %s",
                record.request_id,
                record.phase,
                record.status,
                exc,
            )
            return False
        finally:
            if final:  # the request's span ends with its outcome's entry
                ctx.span.end()
        if self.explanations is not None and record.phase in ("complete", "stream_end"):
            self.explanations.submit(ctx, record)  # in the background: the answer is not delayed
        return True

    def explain_settings(self, ctx: RequestContext) -> dict[str, Any] | None:
        """The attribution to ask of the worker for this request (None: none; ctx says why)."""
        return None if self.explanations is None else self.explanations.settings_for(ctx)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def findings_document(
    per_text: list[list[Finding]], output: list[Finding], per_call: list[list[Finding]] | None = None
) -> str | None:
    """The findings of a request for its audit entry: where, what, who found it; never the value.
    Output findings in a tool call's arguments carry ``call``, its index."""

    def row(f: Finding) -> dict[str, Any]:
        return {"type": f.type, "start": f.start, "end": f.end, "recognizer": f.recognizer, "score": f.score}

    inputs = [{"text": i, **row(f)} for i, found in enumerate(per_text) for f in found]
    outputs = [row(f) for f in output]
    outputs += [{"call": i, **row(f)} for i, found in enumerate(per_call or ()) for f in found]
    if not inputs and not outputs:
        return None
    return _json({"input": inputs, "output": outputs})


def obligations_document(o: Obligations) -> dict[str, Any]:
    """Obligations in the decision contract's JSON shape (for the audit trail and replay)."""
    return {
        "max_tokens": o.max_tokens,
        "allowed_models": None if o.allowed_models is None else list(o.allowed_models),
        "redact": None
        if o.redact is None
        else {"entities": list(o.redact.entities), "operator": o.redact.operator},
        "route": None if o.route is None else {"model": o.route},
        "explain": o.explain
        if o.explain_options is None
        else {"level": o.explain, **o.explain_options.to_json()},
    }


def _withheld() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The request could not be recorded in the audit trail, so its result is withheld.",
        code="audit_unavailable",
        retry_after=1,
    )


def translate(exc: Exception) -> ApiError:
    """Map worker and scanner errors to API errors; ApiErrors pass through."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ScanFailed):  # the output could not be scanned: withhold it
        return ServiceUnavailable(
            "Response withheld: the sensitive-data scanner failed.", code="pii_unavailable", retry_after=1
        )
    if isinstance(exc, WorkerRequestError):
        if exc.code == "generation_failed":  # the worker's fault, not the client's
            return InternalError("The model failed while generating.", code=exc.code)
        if exc.code == "canary_tripped":  # redaction let a canary value through: a server-side failure
            return InternalError(
                "Request refused inside the model worker: a configured canary value reached it; "
                "nothing was generated.",
                code=exc.code,
            )
        return InvalidRequest(str(exc), code=exc.code)
    if isinstance(exc, WorkerUnavailable):
        return ServiceUnavailable(str(exc), code=exc.code, retry_after=exc.retry_after)
    if isinstance(exc, WorkerError) and getattr(exc, "code", None) == "placement_failed":
        return ServiceUnavailable(str(exc), code="placement_failed")  # larger than every device
    if isinstance(exc, WorkerTimeout):
        return GatewayTimeout(str(exc), code=exc.code)
    raise exc
