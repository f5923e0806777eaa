"""Model worker lifecycle events (``sandbox.events``) into the audit trail.

A worker that starts (with the isolation layers it lacks), refuses to start, hangs, dies, or a
model that turns unhealthy or recovers, is recorded like a request: endpoint
``sandbox.worker``, principal ``system:sandbox``, tenant ``system``, the model, and reason
codes (``worker_ready``, ``sandbox_missing_cgroup``, ``worker_exited``, ``signal_sigsys``,
``model_unhealthy``, ...). The worker is untrusted, so nothing it says in free text is kept.
Recording never blocks supervision: each entry is appended in its own task, and a failure to
write one is logged (no request is waiting on it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Literal, Protocol

from gateway.errors import AuditError
from gateway.types import AuditRecord
from sandbox.events import WorkerEvent

log = logging.getLogger("llmos.gateway")

ENDPOINT = "sandbox.worker"
PRINCIPAL = "system:sandbox"
TENANT = "system"

# kind -> (decision, status): how a lifecycle event reads next to the requests around it
_OUTCOME: dict[str, tuple[Literal["allow", "deny", "error"], int]] = {
    "ready": ("allow", 200),
    "recovered": ("allow", 200),
    "refused": ("deny", 503),
    "hung": ("error", 504),
    "exited": ("error", 503),
    "unhealthy": ("error", 503),
}


def event_record(event: WorkerEvent, *, now: datetime | None = None) -> AuditRecord:
    """The audit record of ``event``. Pure (given ``now``)."""
    decision, status = _OUTCOME[event.kind]
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    return AuditRecord(
        request_id=f"wrk_{uuid.uuid4().hex}",
        time=when,
        principal_id=PRINCIPAL,
        auth_method="none",
        tenant=TENANT,
        endpoint=ENDPOINT,
        model=event.model,
        decision=decision,
        status=status,
        reasons=event.reasons,
    )


class AppendSink(Protocol):
    async def append_async(self, record: AuditRecord) -> object: ...


class WorkerEventRecorder:
    """``ModelWorker(on_event=...)``: appends each event's record from a task of its own."""

    def __init__(self, audit: AppendSink) -> None:
        self._audit = audit
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: WorkerEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._append(event), name="llmos-audit-worker")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(self, event: WorkerEvent) -> None:
        try:
            await self._audit.append_async(event_record(event))
        except AuditError as exc:
            log.error("audit: could not record model %r worker event %s: %s", event.model, event.kind, exc)

    async def drain(self) -> None:
        """Wait for the records still being written (at shutdown, before the log closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
