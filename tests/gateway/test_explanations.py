"""gateway.explanations: which attribution a request asks for (or why none), what a worker's
answer becomes, the PII evidence, and a record stored and committed for a request."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from explain.store import ExplanationStore
from gateway.config import ExplainConfig
from gateway.explanations import Explanations, attribution_from_frame, commit_entry, pii_evidence
from gateway.identity import Caller
from gateway.pipeline import RequestContext
from gateway.types import AuditRecord, Evidence, ExplainOptions, Finding, Obligations, Principal, Reason


class Sink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.lazy: list[bool] = []

    async def append_async(self, record: AuditRecord, *, lazy: bool = False) -> None:
        self.records.append(record)
        self.lazy.append(lazy)


def ctx(level: str = "summary", options: ExplainOptions | None = None) -> RequestContext:
    principal = Principal("key:1", "k", "acme", ("user",), "api_key")
    c = RequestContext(request_id="req_1", endpoint="chat.completions", caller=Caller(principal))
    c.obligations = Obligations(explain=level, explain_options=options)  # type: ignore[arg-type]
    return c


def audit_record(request_id: str = "req_1", **changes: Any) -> AuditRecord:
    """An allowed chat request's final audit record."""
    base = AuditRecord(
        request_id=request_id,
        time="2026-11-29T12:00:00.000+00:00",
        principal_id="key:1",
        tenant="acme",
        endpoint="chat.completions",
        model="demo",
        decision="allow",
        status=200,
    )
    return replace(base, **changes)


def explanations(tmp_path: Path, sample: float = 0.0, **config: Any) -> tuple[Explanations, Sink]:
    sink = Sink()
    store = ExplanationStore(tmp_path / "x.db")
    return Explanations(store, sink, ExplainConfig(**config), sample=lambda: sample), sink


def test_settings_follow_the_obligation_and_the_defaults(tmp_path: Path) -> None:
    e, _ = explanations(tmp_path, steps=8)
    assert e.settings_for(ctx()) == {
        "method": "gradient_x_activation",
        "scope": "summary",
        "steps": 8,
        "max_prompt_tokens": 512,
        "max_output_tokens": 64,
        "time_budget_s": 10.0,
    }
    options = ExplainOptions(method="integrated_gradients", steps=32, max_output_tokens=4)
    asked = e.settings_for(ctx("full", options))
    assert asked is not None
    assert (asked["method"], asked["scope"], asked["steps"], asked["max_output_tokens"]) == (
        "integrated_gradients",
        "full",
        32,
        4,
    )


@pytest.mark.parametrize(
    ("level", "sample", "config", "why"),
    [
        ("none", 0.0, {}, ("skipped", "disabled")),
        ("summary", 0.7, {"sample_rate": 0.5}, ("skipped", "sampled_out")),
        ("summary", 0.0, {"max_pending": 1}, ("skipped", "overload")),
    ],
)
def test_no_attribution_is_asked_and_the_context_says_why(
    tmp_path: Path, level: str, sample: float, config: dict[str, Any], why: tuple[str, str]
) -> None:
    e, _ = explanations(tmp_path, sample, **config)
    e.pending = 1  # one record already waits (only max_pending 1 minds)
    c = ctx(level)
    assert e.settings_for(c) is None
    assert c.explain_skip == why


@pytest.mark.parametrize(
    "frame",
    [None, "ok", {"status": "ok"}, {"status": "ok", "attribution": {"scores": []}}, {"status": "bogus"}],
)
def test_an_unusable_worker_answer_is_a_failed_attribution(frame: Any) -> None:
    attribution = attribution_from_frame(frame)
    assert (attribution.status, attribution.reason) == ("failed", "invalid_result")


def test_a_worker_reason_is_kept() -> None:
    attribution = attribution_from_frame({"type": "explanation", "status": "skipped", "reason": "overload"})
    assert (attribution.status, attribution.reason) == ("skipped", "overload")


def test_pii_evidence_says_where_and_why_never_what() -> None:
    c = ctx()
    c.input_findings = [[], [Finding("PHONE_NUMBER", 15, 27, "PhoneRecognizer", 0.75, ("phone",))]]
    c.output_findings = [Finding("EMAIL_ADDRESS", 3, 20, "EmailRecognizer", 1.0)]
    evidence = pii_evidence(c)
    assert [(f.location, f.text_index, f.entity_type, f.context_words) for f in evidence] == [
        ("input", 1, "PHONE_NUMBER", ("phone",)),
        ("output", None, "EMAIL_ADDRESS", ()),
    ]


def test_a_request_gets_its_record_and_commitment(tmp_path: Path) -> None:
    e, sink = explanations(tmp_path)
    c = ctx("none")
    c.decision = "allow"
    c.evidence = (Evidence("access.role_permitted", "role user may call chat.completions"),)
    c.reason_messages = (Reason("note", "a note"),)
    audit = audit_record(
        reasons=("note",), request_digest="r" * 64, response_digest="s" * 64, prompt_tokens=5
    )

    async def scenario() -> None:
        e.settings_for(c)  # level none: skipped, disabled
        e.submit(c, audit)
        await e.drain()

    asyncio.run(scenario())
    stored = e.get("req_1")
    assert stored is not None
    record = stored.record
    assert (record.model_attribution.status, record.model_attribution.reason) == ("skipped", "disabled")
    assert [(r.rule, r.detail) for r in record.decision.rules] == [
        ("access.role_permitted", "role user may call chat.completions")
    ]
    assert [(r.code, r.message) for r in record.decision.reasons] == [("note", "a note")]
    (entry,) = sink.records
    assert commit_entry(audit, stored.digest).response_digest == stored.digest
    assert (entry.phase, entry.request_id, entry.response_digest) == ("explanation", "req_1", stored.digest)
    assert entry.request_digest is None and entry.prompt_tokens == 0
    assert sink.lazy == [True]  # it rides on the next group commit: no response waits for it
    assert e.written == 1 and e.failures == 0 and e.pending == 0


class CountingStore(ExplanationStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def put_many(self, records: list[Any]) -> list[Any]:
        self.batches.append(len(records))
        return super().put_many(records)


def test_records_ready_together_are_written_in_one_transaction(tmp_path: Path) -> None:
    sink = Sink()
    store = CountingStore(tmp_path / "x.db")
    e = Explanations(store, sink, ExplainConfig(), sample=lambda: 0.0)
    audits = [audit_record(f"req_{n}") for n in range(6)]

    async def scenario() -> None:
        for audit in audits:
            c = ctx("none")
            c.decision = "allow"
            e.settings_for(c)
            e.submit(c, audit)
        await e.drain()

    asyncio.run(scenario())
    assert store.batches == [6]  # one transaction, one sync to disk
    assert e.written == 6
    committed = {r.request_id: r.response_digest for r in sink.records}
    for audit in audits:
        stored = e.get(audit.request_id)
        assert stored is not None and committed[audit.request_id] == stored.digest
