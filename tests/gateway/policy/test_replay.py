"""Replaying recorded decisions against a candidate policy set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.audit.keys import generate_signing_key, load_private_key
from gateway.audit.log import AuditLog
from gateway.pipeline import obligations_document
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoEngine
from gateway.policy.input import ModelInfo, RequestSummary, input_document, output_document
from gateway.policy.replay import (
    parse_time,
    read_audit,
    recorded_decisions,
    render_markdown,
    render_text,
    replay,
)
from gateway.types import AuditRecord, Principal

POLICIES = Path(__file__).resolve().parents[3] / "policies"
QUERY, OUTPUT_QUERY = "data.llmos.authz.decision", "data.llmos.output.decision"


def _engine(root: Path) -> RegoEngine:
    return RegoEngine(load_bundle(root), QUERY, OUTPUT_QUERY)


def _record(
    engine: RegoEngine, n: int, role: str, *, time: str, endpoint: str = "chat.completions"
) -> AuditRecord:
    principal = Principal(
        id=f"key:{n:016x}", name=f"k{n}", tenant="acme", roles=(role,), auth_method="api_key"
    )
    summary = RequestSummary(endpoint=endpoint, model="demo", max_tokens=64, message_count=1)
    doc = input_document(principal, summary, time=time, model=ModelInfo("demo"))
    decision = engine.decide(doc)
    output = out_obligations = None
    if decision.allow and endpoint != "models.list":
        output = output_document(doc, findings={}, completion_tokens=5, finish_reason="stop")
        out_obligations = json.dumps(obligations_document(engine.decide(output, "output").obligations))
    return AuditRecord(
        request_id=f"req_{n}",
        time=time,
        principal_id=principal.id,
        tenant="acme",
        endpoint=endpoint,
        model="demo",
        decision="allow" if decision.allow else "deny",
        status=200 if decision.allow else 403,
        reasons=tuple(r.code for r in decision.reasons),
        policy_input=json.dumps(doc),
        output_policy_input=json.dumps(output) if output else None,
        obligations=json.dumps(obligations_document(decision.obligations)),
        output_obligations=out_obligations,
    )


@pytest.fixture
def audit_db(tmp_path: Path) -> Path:
    generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    db = tmp_path / "audit.db"
    baseline = _engine(POLICIES)
    with AuditLog(db, load_private_key(tmp_path / "k.pem")) as log:
        log.append(_record(baseline, 1, "user", time="2026-11-30T10:00:00.000+00:00"))
        log.append(_record(baseline, 2, "auditor", time="2026-11-30T11:00:00.000+00:00"))
        log.append(_record(baseline, 3, "admin", time="2026-11-30T12:00:00.000+00:00"))
        log.append(
            AuditRecord(
                "req_4",
                "2026-11-30T12:30:00.000+00:00",
                "key:x",
                "acme",
                "chat.completions",
                "demo",
                "invalid",
                400,
            )
        )
    return db


def _candidate(tmp_path: Path, edit: dict[str, object]) -> Path:
    cand = tmp_path / "candidate"
    shutil.copytree(POLICIES, cand)
    data = json.loads((cand / "data.json").read_text())
    for role, change in edit.items():
        data["llmos"]["config"]["roles"][role].update(change)
    (cand / "data.json").write_text(json.dumps(data))
    return cand


def test_an_unchanged_policy_changes_nothing(audit_db: Path) -> None:
    report = replay(recorded_decisions(read_audit(audit_db)), _engine(POLICIES))
    assert report.changes == []
    assert report.replayed == 5  # three input decisions, two output decisions
    assert report.skipped == 1  # the invalid request holds no decision


def test_flips_and_obligation_changes_are_reported(audit_db: Path, tmp_path: Path) -> None:
    cand = _candidate(tmp_path, {"user": {"models": []}, "admin": {"max_tokens": 1000}})
    report = replay(recorded_decisions(read_audit(audit_db)), _engine(cand))
    kinds = {(c.recorded.request_id, c.recorded.phase): c.kinds for c in report.changes}
    assert kinds == {("req_1", "input"): ("allow -> deny",), ("req_3", "input"): ("obligations",)}
    denied = next(c for c in report.changes if c.recorded.request_id == "req_1")
    assert denied.reasons == ("model_not_permitted",)
    text = render_text(report)
    assert "1 allow -> deny" in text and "1 obligations changed" in text
    assert "max_tokens: 4096 -> 1000" in text
    md = render_markdown(report, "candidate/")
    assert md.startswith("### Policy replay: `candidate/`")
    assert "| allow -> deny |" in md and "`req_1`" in md


def test_deny_to_allow(audit_db: Path, tmp_path: Path) -> None:
    cand = tmp_path / "candidate"
    shutil.copytree(POLICIES, cand)
    access = (
        (cand / "access.rego")
        .read_text()
        .replace(
            '"chat.completions": {"admin", "user", "contractor"}',
            '"chat.completions": {"admin", "user", "contractor", "auditor"}',
        )
    )
    (cand / "access.rego").write_text(access)
    report = replay(recorded_decisions(read_audit(audit_db)), _engine(cand))
    assert [(c.recorded.request_id, c.kinds) for c in report.changes] == [("req_2", ("deny -> allow",))]


def test_time_window(audit_db: Path, tmp_path: Path) -> None:
    cand = _candidate(tmp_path, {"user": {"models": []}})
    decisions = recorded_decisions(
        read_audit(audit_db), since=parse_time("2026-11-30T10:30:00+00:00"), until=parse_time("2026-12-01")
    )
    report = replay(decisions, _engine(cand))
    assert report.changes == []  # req_1 (10:00) is outside the window
    assert report.replayed == 3


def test_a_stream_replays_its_input_from_the_start_entry_and_its_output_from_the_end(tmp_path: Path) -> None:
    from dataclasses import replace

    generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    db = tmp_path / "audit.db"
    rec = _record(_engine(POLICIES), 7, "user", time="2026-11-30T10:00:00.000+00:00")
    with AuditLog(db, load_private_key(tmp_path / "k.pem")) as log:
        log.append(replace(rec, phase="stream_start", output_policy_input=None))
        log.append(replace(rec, phase="stream_end"))
        # a block obligation enforced on a prompt: denied, but an allow by policy
        log.append(
            replace(
                rec,
                request_id="req_8",
                decision="deny",
                status=403,
                reasons=("sensitive_data_blocked",),
                output_policy_input=None,
            )
        )
    same = replay(recorded_decisions(read_audit(db)), _engine(POLICIES))
    assert (same.replayed, same.changes, same.skipped) == (3, [], 0)

    cand = tmp_path / "candidate"
    shutil.copytree(POLICIES, cand)
    (cand / "output.rego").write_text(
        (cand / "output.rego").read_text() + '\ndeny contains {"code": "no_output", "message": "x"} if true\n'
    )
    changed = replay(recorded_decisions(read_audit(db)), _engine(cand))
    assert [(c.recorded.request_id, c.recorded.phase, c.kinds) for c in changed.changes] == [
        ("req_7", "output", ("allow -> deny",))
    ]


def test_a_change_to_output_redaction_is_reported(audit_db: Path, tmp_path: Path) -> None:
    cand = tmp_path / "candidate"
    shutil.copytree(POLICIES, cand)
    data = json.loads((cand / "data.json").read_text())
    data["llmos"]["config"]["output_redact"]["entities"] = ["EMAIL_ADDRESS"]  # stop redacting SSNs and cards
    (cand / "data.json").write_text(json.dumps(data))
    report = replay(recorded_decisions(read_audit(audit_db)), _engine(cand))
    assert {(c.recorded.request_id, c.recorded.phase, c.kinds) for c in report.changes} == {
        ("req_1", "output", ("obligations",)),
        ("req_3", "output", ("obligations",)),
    }
    assert "redact" in render_text(report)
