"""Explanation records for every decision: the gateway's side (docs/explanations.md).

Every request that gets a final audit entry (``complete``, or ``stream_end`` for a stream) gets
an explanation record (``explain.record``): the policy decision with the rules that produced it,
the sensitive-data findings (never their values), and the model's token attribution or why
there is none. The record is stored (``explain.store``) and its digest committed to the audit
log by an entry of its own (phase ``explanation``, the digest in ``response_digest``), so the
same signed log covers it.

Attributions are asked of the worker serving the request (``sandbox.explaining``) when the
policy's ``explain`` obligation says ``summary`` or ``full``, for ``explain.sample_rate`` of
those requests, while fewer than ``explain.max_pending`` records wait for one. The record is
written once the worker answers (at most ``explain.wait_s``), after the response was sent:
answers are never delayed by it. When an attribution is not computed the record says why:
``skipped`` (``disabled``, ``sampled_out``, ``overload``), ``not_applicable`` (``denied``,
``not_generated``, ``echo_model``) or ``failed`` (``timeout``, ``worker_error``, ...).

A gateway stopped hard between a request's final audit entry and its record (killed, power
lost) leaves that request without a record. :meth:`Explanations.recover` runs at the next start
(in the background) and finds those requests in the audit log: entries after the store's
``recovered_through`` mark that end a request (``complete``, ``stream_end``, or a
``stream_start`` never ended) with no ``explanation`` entry. Each gets the record its audit
entry allows (decision, reasons, obligations, PII findings without context words; not the
policy rules, which the audit entry does not hold), with the model attribution
``failed: interrupted``, which says so; a record that was stored but not yet committed is
committed as it is.

Only this module talks to the store; it never imports torch (``explain.attribution`` runs in
the worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from explain.errors import ExplanationError
from explain.evidence import ModelAttribution, PiiFinding, PolicyReason, PolicyRule
from explain.record import ExplanationRecord
from explain.store import ExplanationStore, StoredExplanation
from gateway.audit.canonical import JsonValue
from gateway.audit.entry import record_from_entry
from gateway.config import ExplainConfig
from gateway.errors import AuditError
from gateway.types import AuditRecord, ExplainLevel
from gateway.workerevents import ENDPOINT as WORKER_EVENT_ENDPOINT

if TYPE_CHECKING:
    from gateway.pipeline import RequestContext

log = logging.getLogger("llmos.gateway")


STORE_BATCH_MAX = 256  # records in one store transaction
# A store write waits this long for more records to share its transaction and sync to disk
# (no response waits for a record; a hard kill in between is repaired at the next start).
STORE_LINGER_S = 0.02
RECOVERED_THROUGH = "recovered_through"  # explanation_meta: the audit seq recovery has reached
WITHHELD_PRINCIPAL = "(withheld)"  # a recovered record whose audit entry's principal is sealed


class AppendSink(Protocol):
    async def append_async(self, record: AuditRecord, *, lazy: bool = False) -> object: ...


class HasSeq(Protocol):
    @property
    def seq(self) -> int: ...


class UnexplainedSource(Protocol):
    """The audit log as recovery reads it (``gateway.audit.log.AuditLog``)."""

    def head(self) -> HasSeq | None: ...

    def unexplained(
        self, after_seq: int, upto_seq: int, limit: int = ...
    ) -> list[tuple[int, dict[str, JsonValue]]]: ...


class Explanations:
    """Builds, stores and commits the explanation record of every request."""

    def __init__(
        self,
        store: ExplanationStore,
        audit: AppendSink,
        config: ExplainConfig,
        *,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.audit = audit
        self.config = config
        self.sample = sample
        self.pending = 0  # records waiting for an attribution
        self.written = 0
        self.failures = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: list[tuple[ExplanationRecord, asyncio.Future[StoredExplanation | ExplanationError]]] = []
        self._writer: asyncio.Task[None] | None = None

    # -- before generating ------------------------------------------------------------------

    def settings_for(self, ctx: RequestContext) -> dict[str, Any] | None:
        """The attribution settings to send with the request, or None (``ctx`` says why)."""
        level = ctx.obligations.explain
        if level == "none":
            ctx.explain_skip = ("skipped", "disabled")
            return None
        if self.sample() >= self.config.sample_rate:
            ctx.explain_skip = ("skipped", "sampled_out")
            return None
        if self.pending >= self.config.max_pending:
            ctx.explain_skip = ("skipped", "overload")
            return None
        c, o = self.config, ctx.obligations.explain_options
        return {
            "method": (o.method if o and o.method else None) or c.method,
            "scope": level,
            "steps": (o.steps if o else None) or c.steps,
            "max_prompt_tokens": (o.max_prompt_tokens if o else None) or c.max_prompt_tokens,
            "max_output_tokens": (o.max_output_tokens if o else None) or c.max_output_tokens,
            "time_budget_s": c.time_budget_s,
        }

    # -- after the final audit entry ---------------------------------------------------------

    def submit(self, ctx: RequestContext, audit: AuditRecord) -> None:
        """Record ``ctx``'s explanation in the background (``audit``: its final audit record)."""
        owed = ctx.explanation
        ctx.explanation = None
        if owed is not None:
            self.pending += 1
        task = asyncio.get_running_loop().create_task(self._record(ctx, audit, owed), name="llmos-explain")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the records in progress (at shutdown, before the audit log closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _record(
        self, ctx: RequestContext, audit: AuditRecord, owed: asyncio.Future[Any] | None
    ) -> None:
        try:
            attribution = await self._attribution(ctx, audit, owed)
        finally:
            if owed is not None:
                self.pending -= 1
        try:
            record = ExplanationRecord.from_audit(
                audit,
                level=ctx.obligations.explain,
                model_attribution=attribution,
                reasons=reasons_with_messages(audit.reasons, ctx),
                rules=tuple(PolicyRule(e.rule, e.detail) for e in (*ctx.evidence, *ctx.output_evidence)),
                pii_findings=pii_evidence(ctx),
            )
            stored = await self._store(record)
            # Lazy: it joins the next request's group commit rather than delaying it with its own.
            await self.audit.append_async(commit_entry(audit, stored.digest), lazy=True)
            self.written += 1
        except (ExplanationError, AuditError) as exc:
            self.failures += 1
            log.error("explanation for request %s not recorded: %s", audit.request_id, exc)
        except Exception:  # a bug must not kill the event loop's other work
            self.failures += 1
            log.exception("explanation for request %s not recorded", audit.request_id)

    async def _store(self, record: ExplanationRecord) -> StoredExplanation:
        """Put ``record`` in the store with the others queued meanwhile (group commit): one
        transaction, one sync to disk, for every record that became ready within
        ``STORE_LINGER_S`` or while the last write ran; their commit entries then reach the
        audit log together. Raises ExplanationError for this record."""
        future: asyncio.Future[StoredExplanation | ExplanationError] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((record, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queued(), name="llmos-explain-store"
            )
        result = await future
        if isinstance(result, ExplanationError):
            raise result
        return result

    async def _write_queued(self) -> None:
        if len(self._queue) < STORE_BATCH_MAX:
            await asyncio.sleep(STORE_LINGER_S)
        while self._queue:
            batch, self._queue = self._queue[:STORE_BATCH_MAX], self._queue[STORE_BATCH_MAX:]
            try:
                results: list[StoredExplanation | ExplanationError] = await asyncio.to_thread(
                    self.store.put_many, [record for record, _ in batch]
                )
            except ExplanationError as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # a bug: every waiting record fails, the loop goes on
                log.exception("explanation store write failed")
                results = [ExplanationError(f"explanation store write failed ({type(exc).__name__})")] * len(
                    batch
                )
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _attribution(
        self, ctx: RequestContext, audit: AuditRecord, owed: asyncio.Future[Any] | None
    ) -> ModelAttribution:
        if audit.decision != "allow":
            return ModelAttribution(
                "not_applicable", "denied" if audit.decision == "deny" else "not_generated"
            )
        if owed is None:
            status, reason = ctx.explain_skip or ("not_applicable", "not_generated")
            return ModelAttribution(status, reason)  # type: ignore[arg-type]
        try:
            frame = await asyncio.wait_for(asyncio.shield(owed), self.config.wait_s)
        except TimeoutError:
            return ModelAttribution("failed", "timeout")
        return attribution_from_frame(frame)

    # -- at start: the records an earlier run did not write --------------------------------------

    def start_recovery(self, audit: UnexplainedSource) -> asyncio.Task[int]:
        """Start :meth:`recover` in the background up to the log's current end. Call at start,
        before requests are served: entries appended later are this run's own."""
        head = audit.head()
        task = asyncio.get_running_loop().create_task(
            self.recover(audit, 0 if head is None else head.seq), name="llmos-explain-recovery"
        )
        self._tasks.add(task)  # drained at shutdown like the others
        task.add_done_callback(self._tasks.discard)
        return task

    async def recover(self, audit: UnexplainedSource, upto: int) -> int:
        """Write (or commit) the records of requests whose record an earlier run lost (see the
        module docstring), among the audit entries up to seq ``upto``. Returns how many were
        recovered; an entry that cannot be recovered is logged and stops the pass (the next
        start retries it)."""
        mark = await asyncio.to_thread(self.store.meta, RECOVERED_THROUGH)
        after = int(mark) if mark is not None and mark.isdigit() else 0
        recovered = 0
        try:
            while after < upto:
                rows = await asyncio.to_thread(audit.unexplained, after, upto)
                if not rows:
                    break
                for seq, entry in rows:
                    if entry.get("endpoint") != WORKER_EVENT_ENDPOINT:
                        await self._recover_one(entry)
                        recovered += 1
                    after = seq
            after = upto
        except (ExplanationError, AuditError) as exc:
            self.failures += 1
            log.error("explanation recovery stopped after audit entry %d: %s", after, exc)
        await asyncio.to_thread(self.store.set_meta, RECOVERED_THROUGH, str(after))
        if recovered:
            log.warning(
                "%d request(s) of an earlier run had no explanation record (the gateway stopped"
                " before writing it): recorded now as failed: interrupted",
                recovered,
            )
        return recovered

    async def _recover_one(self, entry: dict[str, JsonValue]) -> None:
        audit = record_from_entry(entry)
        stored = await asyncio.to_thread(self.store.get, audit.request_id)
        if stored is None:
            if not audit.principal_id:
                audit = replace(audit, principal_id=WITHHELD_PRINCIPAL)
            record = ExplanationRecord.from_audit(
                audit,
                level=explain_level(audit.obligations),
                model_attribution=ModelAttribution("failed", "interrupted"),
            )
            stored = await asyncio.to_thread(self.store.put, record)
        await self.audit.append_async(commit_entry(audit, stored.digest))  # one at a time: not lazy
        self.written += 1

    def get(self, request_id: str) -> StoredExplanation | None:
        return self.store.get(request_id)

    def close(self) -> None:
        self.store.close()


def explain_level(obligations: str | None) -> ExplainLevel:
    """The ``explain`` level an audit entry's obligations document names (``none`` if none)."""
    try:
        document = json.loads(obligations) if obligations else {}
    except ValueError:
        return "none"
    value = document.get("explain") if isinstance(document, dict) else None
    level = value.get("level") if isinstance(value, dict) else value
    return level if level in ("summary", "full") else "none"


def pii_evidence(ctx: RequestContext) -> tuple[PiiFinding, ...]:
    """The request's findings as evidence: where, what, who, how sure, which context words;
    never the value (the findings hold none)."""
    found = [
        PiiFinding(f.type, f.recognizer, min(1.0, max(0.0, f.score)), "input", f.start, f.end, i, f.context)
        for i, per_text in enumerate(ctx.input_findings)
        for f in per_text
    ]
    found += [
        PiiFinding(
            f.type, f.recognizer, min(1.0, max(0.0, f.score)), "output", f.start, f.end, None, f.context
        )
        for f in ctx.output_findings
    ]
    found += [
        PiiFinding(
            f.type, f.recognizer, min(1.0, max(0.0, f.score)), "tool_call", f.start, f.end, i, f.context
        )
        for i, per_call in enumerate(ctx.output_call_findings)
        for f in per_call
    ]
    return tuple(found)


def reasons_with_messages(codes: tuple[str, ...], ctx: RequestContext) -> tuple[PolicyReason, ...]:
    """The audit entry's reason codes, with the policy's message where the policy gave one."""
    messages = {r.code: r.message for r in ctx.reason_messages}
    return tuple(PolicyReason(code, messages.get(code, "")) for code in codes)


def attribution_from_frame(frame: Any) -> ModelAttribution:
    """The worker's ``explanation`` frame (``sandbox.explaining``) as the record's attribution."""
    if not isinstance(frame, dict):
        return ModelAttribution("failed", "invalid_result")
    try:
        return ModelAttribution.from_json(
            {
                "status": frame.get("status"),
                "reason": frame.get("reason"),
                "attribution": frame.get("attribution"),
            },
            "$.explanation",
        )
    except ExplanationError as exc:
        log.warning("unusable explanation from a worker: %s", exc)
        return ModelAttribution("failed", "invalid_result")


def commit_entry(audit: AuditRecord, digest: str) -> AuditRecord:
    """The audit entry that commits a stored record: the request's identity, phase
    ``explanation``, the record's digest in ``response_digest``."""
    return replace(
        audit,
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        phase="explanation",
        request_digest=None,
        response_digest=digest,
        prompt_tokens=0,
        completion_tokens=0,
        latency_ms=0,
        policy_input=None,
        output_policy_input=None,
        obligations=None,
        output_obligations=None,
        findings=None,
    )
