from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

import pytest

from explain.record import (
    ATTRIBUTION_REASONS,
    NO_ML_SCORES_NOTE,
    DecisionEvidence,
    ExplanationError,
    ExplanationRecord,
    MlScore,
    ModelAttribution,
    PiiFinding,
    PolicyRule,
    pii_findings_from_audit,
)
from gateway.types import AuditRecord
from tests.explain import factories


def test_round_trip_through_canonical_bytes() -> None:
    record = factories.record()
    body = record.canonical_bytes()
    assert ExplanationRecord.from_json(body) == record
    assert ExplanationRecord.from_json(body.decode()) == record
    assert ExplanationRecord.from_json(json.loads(body)) == record
    assert ExplanationRecord.from_json(body, digest=record.digest()) == record
    # canonical: sorted keys, no whitespace
    assert (
        body
        == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


@pytest.mark.parametrize(
    "model_attribution",
    [
        ModelAttribution.pending(),
        ModelAttribution.ok(factories.attribution("full", "feature_ablation")),
        ModelAttribution.ok(factories.attribution("full", "gradient_x_activation")),
        ModelAttribution("skipped", "overload"),
        ModelAttribution("failed", "worker_error"),
        ModelAttribution("not_applicable", "echo_model"),
    ],
)
def test_round_trip_every_attribution_status(model_attribution: ModelAttribution) -> None:
    record = factories.record(model_attribution)
    assert ExplanationRecord.from_json(record.canonical_bytes()) == record


def test_round_trip_with_ml_scores() -> None:
    scores = (
        MlScore("toxicity", 0.125, "integrated_gradients", ("you", " fool"), (0.01, 0.5), threshold=0.8),
    )
    record = factories.record(ml_scores=scores, ml_scores_note=None)
    assert record.ml_scores_note is None
    assert ExplanationRecord.from_json(record.canonical_bytes()) == record
    with pytest.raises(ExplanationError, match="one score per token"):
        MlScore("toxicity", 0.1, "integrated_gradients", ("a",), ())


def test_without_ml_scores_the_record_says_so() -> None:
    record = factories.record()
    assert record.ml_scores == () and record.ml_scores_note == NO_ML_SCORES_NOTE
    assert record.to_json()["ml_scores_note"] == NO_ML_SCORES_NOTE
    data = record.to_json()
    data["ml_scores_note"] = None
    with pytest.raises(ExplanationError, match="ml_scores_note"):
        ExplanationRecord.from_json(data)


def test_digest_is_stable_and_pinned() -> None:
    record = factories.record()
    assert factories.record().digest() == record.digest()
    assert len(record.digest()) == 64
    # The format is frozen: a change here needs a new format version ("v").
    assert record.digest() == PINNED_DIGEST


PINNED_DIGEST = "f022d77227b2f7afd685008763e525b921ac8f8fa9b44ef983149d4b4599b11c"


def test_any_change_changes_the_digest() -> None:
    record = factories.record()
    a = record.model_attribution.attribution
    assert a is not None
    scores = list(a.scores)
    scores[3] = 0.000001
    changed = replace(record, model_attribution=ModelAttribution.ok(replace(a, scores=tuple(scores))))
    assert changed.digest() != record.digest()
    assert changed.evidence_digest() == record.evidence_digest()  # only the attribution changed
    with pytest.raises(ExplanationError, match="refusal"):  # a refusal cannot carry an attribution
        replace(record, decision=replace(record.decision, decision="deny", status=403))
    other = replace(record, decision=replace(record.decision, status=201))
    assert other.evidence_digest() != record.evidence_digest()


def test_a_digest_mismatch_is_rejected() -> None:
    record = factories.record()
    data = record.to_json()
    data["model_attribution"]["attribution"]["scores"][0] = 0.5  # altered after it was written
    with pytest.raises(ExplanationError, match="digest mismatch"):
        ExplanationRecord.from_json(data, digest=record.digest())


def _mutations() -> list[tuple[str, Any, str]]:
    def attribution(d: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = d["model_attribution"]["attribution"]
        return result

    return [
        ("missing member", lambda d: d.pop("decision"), "lacks decision"),
        ("unknown member", lambda d: d.update(prompt="the text"), "unknown member"),
        ("version", lambda d: d.update(v=2), r"\$.v"),
        ("bad created", lambda d: d.update(created="yesterday"), "created"),
        ("local time", lambda d: d.update(created="2026-11-29T12:00:00+02:00"), "created"),
        ("bad decision", lambda d: d["decision"].update(decision="maybe"), r"\$.decision.decision"),
        ("bad status", lambda d: d["decision"].update(status=99), r"\$.decision.status"),
        ("obligations text", lambda d: d["decision"].update(obligations="{}"), "obligations"),
        ("finding value", lambda d: d["pii_findings"][0].update(value="bob@example.com"), "unknown member"),
        ("finding score", lambda d: d["pii_findings"][0].update(score=1.5), r"\[0, 1\]"),
        ("status", lambda d: d["model_attribution"].update(status="done"), "status"),
        ("ok without attribution", lambda d: d["model_attribution"].update(attribution=None), "attribution"),
        (
            "skipped without reason",
            lambda d: d["model_attribution"].update(status="skipped", attribution=None),
            "reason",
        ),
        ("misaligned scores", lambda d: attribution(d)["scores"].pop(), "one score per prompt token"),
        ("score as text", lambda d: attribution(d)["scores"].__setitem__(0, "0.5"), r"scores\[0\]"),
        ("level", lambda d: d.update(level="everything"), r"\$.level"),
        ("rule", lambda d: d["decision"]["rules"].append({"rule": "", "detail": ""}), r"rules\[1\].rule"),
        ("control characters", lambda d: d.update(request_id="req\x1b[2J"), "control characters"),
    ]


@pytest.mark.parametrize(("name", "mutate", "message"), _mutations(), ids=[m[0] for m in _mutations()])
def test_malformed_records_are_rejected(name: str, mutate: Any, message: str) -> None:
    data = factories.record().to_json()
    mutate(data)
    with pytest.raises(ExplanationError, match=message):
        ExplanationRecord.from_json(data)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[]",
        b"{",
        b"\xff\xfe",
        b'{"v": NaN}',
        b'{"v": 1, "v": 1}',
    ],
)
def test_text_that_is_not_a_record_is_rejected(text: bytes) -> None:
    with pytest.raises(ExplanationError, match="malformed explanation"):
        ExplanationRecord.from_json(text)


def test_nan_in_a_score_is_rejected() -> None:
    body = factories.record().canonical_bytes().replace(b'"scores":[-0.375', b'"scores":[NaN')
    with pytest.raises(ExplanationError, match="NaN"):
        ExplanationRecord.from_json(body)


def test_findings_never_carry_values() -> None:
    assert {f.name for f in fields(PiiFinding)} == {
        "entity_type",
        "recognizer",
        "score",
        "location",
        "start",
        "end",
        "text_index",
        "context_words",
    }
    secret = "bob@example.com"
    findings_json = json.dumps(
        {
            "input": [
                {
                    "text": 0,
                    "type": "EMAIL_ADDRESS",
                    "start": 8,
                    "end": 23,
                    "recognizer": "pattern",
                    "score": 1.0,
                }
            ],
            "output": [
                {"type": "US_SSN", "start": 0, "end": 11, "recognizer": "pattern", "score": 0.85},
                {"call": 1, "type": "US_SSN", "start": 9, "end": 20, "recognizer": "pattern", "score": 0.85},
            ],
        }
    )
    findings = pii_findings_from_audit(findings_json)
    assert [(f.entity_type, f.location, f.text_index) for f in findings] == [
        ("EMAIL_ADDRESS", "input", 0),
        ("US_SSN", "output", None),
        ("US_SSN", "tool_call", 1),  # in the arguments of the second tool call the model made
    ]
    assert PiiFinding.from_json(findings[2].to_json(), "f") == findings[2]
    with pytest.raises(ExplanationError):
        PiiFinding("US_SSN", "pattern", 1.0, "tool_call", 0, 3)  # which call, always
    record = factories.record(pii_findings=findings)
    assert secret.encode() not in record.canonical_bytes()


def test_from_audit_links_to_the_audit_record() -> None:
    policy_input = '{"principal":{"id":"key:1"},"request":{"model":"demo"}}'
    audit = AuditRecord(
        request_id="req-7",
        time="2026-11-29T12:00:00.123+00:00",
        principal_id="key:1",
        tenant="acme",
        endpoint="chat.completions",
        model="demo",
        decision="allow",
        status=200,
        reasons=("redacted",),
        policy_digest="sha256:" + "12" * 32,
        policy_input=policy_input,
        obligations='{"explain":"full","max_tokens":null}',
        findings='{"input":[{"text":0,"type":"EMAIL_ADDRESS","start":1,"end":5,"recognizer":"pattern","score":1.0}],'
        '"output":[]}',
        model_digest="sha256:" + "34" * 32,
    )
    record = ExplanationRecord.from_audit(audit, level="full")
    assert record.model_attribution == ModelAttribution.pending()
    assert (record.request_id, record.created, record.principal_id, record.tenant) == (
        "req-7",
        audit.time,
        "key:1",
        "acme",
    )
    assert record.decision.reasons[0].code == "redacted"
    assert record.decision.obligations == '{"explain":"full","max_tokens":null}'
    import hashlib

    assert record.decision.policy_input_digest == hashlib.sha256(policy_input.encode()).hexdigest()
    assert record.pii_findings[0].entity_type == "EMAIL_ADDRESS"
    assert record.model_digest == audit.model_digest

    denied = ExplanationRecord.from_audit(replace(audit, decision="deny", status=403), level="summary")
    assert denied.model_attribution == ModelAttribution("not_applicable", "denied")
    errored = ExplanationRecord.from_audit(replace(audit, decision="error", status=500), level="summary")
    assert errored.model_attribution == ModelAttribution("not_applicable", "not_generated")
    unexplained = ExplanationRecord.from_audit(audit, level="none")
    assert unexplained.model_attribution == ModelAttribution("skipped", "disabled")
    ruled = ExplanationRecord.from_audit(
        audit, level="full", rules=(PolicyRule("access.role_permitted", "role user"),)
    )
    assert ruled.decision.rules == (PolicyRule("access.role_permitted", "role user"),)
    assert ExplanationRecord.from_json(ruled.canonical_bytes()) == ruled


def test_pending_then_final() -> None:
    pending = factories.record(ModelAttribution.pending())
    final = pending.with_attribution(ModelAttribution.ok(factories.attribution()))
    assert final.evidence_digest() == pending.evidence_digest() == pending.digest()
    assert final.digest() != pending.digest()
    with pytest.raises(ExplanationError, match="already ok"):
        final.with_attribution(ModelAttribution("skipped", "overload"))


def test_reason_codes_are_checked_per_status() -> None:
    for status, reasons in ATTRIBUTION_REASONS.items():
        for reason in reasons:
            ModelAttribution(status, reason)  # type: ignore[arg-type]
    with pytest.raises(ExplanationError):
        ModelAttribution("skipped", "denied")
    with pytest.raises(ExplanationError):
        ModelAttribution("skipped")
    with pytest.raises(ExplanationError):
        ModelAttribution("pending", "overload")
    with pytest.raises(ExplanationError):
        ModelAttribution("ok")


def test_decision_evidence_keeps_obligations_canonical() -> None:
    evidence = DecisionEvidence("allow", 200, obligations='{ "b": 1, "a": [1, 2.50] }')
    assert evidence.obligations == '{"a":[1,2.5],"b":1}'
    with pytest.raises(ExplanationError, match="JSON object"):
        DecisionEvidence("allow", 200, obligations="[1]")
    with pytest.raises(ExplanationError, match="not JSON"):
        DecisionEvidence("allow", 200, obligations="{nope")
