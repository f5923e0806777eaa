"""Worker lifecycle events become audit entries: codes only, in a real audit log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.audit.verify import verify_log
from gateway.errors import AuditError
from gateway.types import AuditRecord
from gateway.workerevents import ENDPOINT, WorkerEventRecorder, event_record
from sandbox.events import WorkerEvent

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_each_kind_reads_as_a_decision_and_status() -> None:
    cases = {
        "ready": ("allow", 200),
        "recovered": ("allow", 200),
        "refused": ("deny", 503),
        "hung": ("error", 504),
        "exited": ("error", 503),
        "unhealthy": ("error", 503),
    }
    for kind, (decision, status) in cases.items():
        record = event_record(WorkerEvent(kind, "demo", (f"x_{kind}",), pid=7), now=NOW)  # type: ignore[arg-type]
        assert (record.decision, record.status) == (decision, status)
        assert record.endpoint == ENDPOINT and record.model == "demo"
        assert record.principal_id == "system:sandbox" and record.tenant == "system"
        assert record.reasons == (f"x_{kind}",)
        assert record.time == "2026-11-29T12:00:00.000+00:00"
        assert record.request_id.startswith("wrk_")
    first = event_record(WorkerEvent("ready", "demo", ()), now=NOW)
    assert first.request_id != event_record(WorkerEvent("ready", "demo", ()), now=NOW).request_id


def test_the_recorder_writes_verifiable_entries(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "audit.db", key)

    async def scenario() -> None:
        recorder = WorkerEventRecorder(log)
        recorder(WorkerEvent("ready", "demo", ("worker_ready", "sandbox_missing_cgroup"), pid=11))
        recorder(WorkerEvent("exited", "demo", ("worker_exited", "signal_sigsys"), pid=11))
        await recorder.drain()

    asyncio.run(scenario())
    log.close()
    with AuditLog(tmp_path / "audit.db", key) as reopened:
        assert reopened.head() is not None
    assert verify_log(tmp_path / "audit.db", key.public_key()).entries == 2


class FailingSink:
    def __init__(self) -> None:
        self.tried: list[AuditRecord] = []

    async def append_async(self, record: AuditRecord) -> object:
        self.tried.append(record)
        raise AuditError("disk full")


def test_a_failed_write_is_logged_and_supervision_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    sink = FailingSink()

    async def scenario() -> None:
        recorder = WorkerEventRecorder(sink)
        recorder(WorkerEvent("hung", "demo", ("worker_hung",)))
        await recorder.drain()

    asyncio.run(scenario())
    assert [r.reasons for r in sink.tried] == [("worker_hung",)]
    assert "could not record model 'demo' worker event hung: disk full" in caplog.text
