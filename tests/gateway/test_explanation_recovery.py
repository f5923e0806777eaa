"""gateway.explanations recovery: requests of an earlier run whose record was lost (the gateway
stopped between the final audit entry and the record) get one at the next start, read from the
real audit log; records stored but not committed are committed as they are."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from explain.errors import ExplanationError
from explain.record import ExplanationRecord
from explain.store import ExplanationStore, StoredExplanation
from gateway.audit.log import AuditLog
from gateway.config import ExplainConfig
from gateway.explanations import RECOVERED_THROUGH, Explanations, explain_level
from gateway.types import AuditRecord
from gateway.workerevents import ENDPOINT as WORKER_EVENT_ENDPOINT

FINDINGS = json.dumps(
    {
        "input": [
            {"text": 0, "type": "EMAIL_ADDRESS", "start": 3, "end": 20, "recognizer": "Email", "score": 1.0}
        ],
        "output": [],
    }
)


def entry(request_id: str, phase: str = "complete", **fields: object) -> AuditRecord:
    base = AuditRecord(
        request_id=request_id,
        time="2026-11-30T01:00:00.000+00:00",
        principal_id="key:alice",
        tenant="acme",
        endpoint="chat.completions",
        model="demo",
        decision="allow",
        status=200,
        policy_digest="sha256:abc",
        obligations=json.dumps({"explain": "summary"}),
        phase=phase,  # type: ignore[arg-type]
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def run(log: AuditLog, store: ExplanationStore) -> tuple[int, Explanations]:
    explanations = Explanations(store, log, ExplainConfig())

    async def go() -> int:
        count = await explanations.start_recovery(log)
        await explanations.drain()
        return count

    return asyncio.run(go()), explanations


def committed(log: AuditLog, request_id: str) -> str | None:
    found = log.get(request_id, "explanation")
    return None if found is None else str(found["response_digest"])


def test_lost_records_are_written_and_committed_once(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    store = ExplanationStore(tmp_path / "x.db")
    with AuditLog(tmp_path / "audit.db", key) as log:
        log.append(entry("req_done"))  # with its record, below
        log.append(entry("req_lost", findings=FINDINGS))
        log.append(entry("req_denied", decision="deny", status=403, reasons=("model_not_allowed",)))
        log.append(entry("req_cut", "stream_start"))  # a stream the kill cut off
        log.append(entry("req_streamed", "stream_start"))
        log.append(entry("req_streamed", "stream_end"))
        log.append(entry("wrk_1", endpoint=WORKER_EVENT_ENDPOINT, principal_id="system:sandbox"))
        done = store.put(ExplanationRecord.from_audit(entry("req_done"), level="summary"))
        log.append(replace(entry("req_done"), phase="explanation", response_digest=done.digest))

        count, explanations = run(log, store)

        assert count == 4
        assert explanations.failures == 0
        for request_id in ("req_lost", "req_denied", "req_cut", "req_streamed"):
            stored = store.get(request_id)
            assert stored is not None, request_id
            assert (stored.record.model_attribution.status, stored.record.model_attribution.reason) == (
                "failed",
                "interrupted",
            )
            assert committed(log, request_id) == stored.digest
        lost = store.get("req_lost")
        assert lost is not None
        assert lost.record.level == "summary"
        assert lost.record.principal_id == "key:alice"
        assert [(f.entity_type, f.start, f.end) for f in lost.record.pii_findings] == [
            ("EMAIL_ADDRESS", 3, 20)
        ]
        denied = store.get("req_denied")
        assert denied is not None
        assert denied.record.decision.decision == "deny"
        assert [r.code for r in denied.record.decision.reasons] == ["model_not_allowed"]
        assert store.get("wrk_1") is None  # a worker event is no request
        assert committed(log, "req_done") == done.digest
        assert store.meta(RECOVERED_THROUGH) == str(log.head().seq - 4)  # type: ignore[union-attr]

        # A second start finds nothing more, and looks only at what is new.
        again, _ = run(log, store)
        assert again == 0


def test_a_stored_record_without_its_commitment_is_committed_unchanged(tmp_path: Path) -> None:
    store = ExplanationStore(tmp_path / "x.db")
    with AuditLog(tmp_path / "audit.db", Ed25519PrivateKey.generate()) as log:
        log.append(entry("req_1"))
        stored = store.put(ExplanationRecord.from_audit(entry("req_1"), level="none"))

        count, _ = run(log, store)

        assert count == 1
        assert committed(log, "req_1") == stored.digest
        again = store.get("req_1")
        assert again is not None and again.digest == stored.digest


class FailingStore(ExplanationStore):
    """A store whose reads of one request fail (a disk error) while ``failing`` is set."""

    failing = True

    def get(self, request_id: str) -> StoredExplanation | None:
        if self.failing and request_id == "req_2":
            raise ExplanationError("explanation store: read failed (disk I/O error)")
        return super().get(request_id)


def test_recovery_resumes_where_a_failure_stopped_it(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "x.db")
    with AuditLog(tmp_path / "audit.db", Ed25519PrivateKey.generate()) as log:
        log.append(entry("req_1"))
        log.append(entry("req_2"))
        log.append(entry("req_3"))

        count, explanations = run(log, store)

        assert (count, explanations.failures) == (1, 1)
        assert store.meta(RECOVERED_THROUGH) == "1"  # req_1's entry: req_2 is retried next start
        assert committed(log, "req_2") is None and committed(log, "req_3") is None
        store.failing = False
        count, explanations = run(log, store)
        assert (count, explanations.failures) == (2, 0)
        assert committed(log, "req_2") is not None and committed(log, "req_3") is not None


def test_the_level_comes_from_the_audited_obligations() -> None:
    assert explain_level(json.dumps({"explain": "full"})) == "full"
    assert (
        explain_level(json.dumps({"explain": {"level": "summary", "method": "feature_ablation"}}))
        == "summary"
    )
    assert explain_level(json.dumps({"explain": "none"})) == "none"
    assert explain_level(None) == "none"
    assert explain_level("not json") == "none"
