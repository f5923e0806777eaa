"""The explanation record of one request, pure (no torch: the gateway imports this).

A record gathers why the gateway did what it did: the policy decision and its evidence, the
sensitive-data findings (never their values), the model's token attribution (or why there is
none), attributions of ML scores the policy used, and the model's digest. It is built once,
checked in its constructor, stored as canonical JSON (:mod:`explain.canonical`, RFC 8785) and
parsed back with :meth:`ExplanationRecord.from_json`, which rejects anything malformed.

Record JSON (format ``v`` 1; every member always present)::

    {
      "v": 1,
      "request_id": str, "created": "2026-11-29T12:00:00.123+00:00" (UTC; the audit entry's time),
      "principal_id": str, "tenant": str,
      "model": str | null, "model_digest": str | null,
      "level": "none" | "summary" | "full",   # the policy's explain obligation
      "decision": {
        "decision": "allow" | "deny" | "invalid" | "error", "status": int,
        "reasons": [{"code": str, "message": str}],
        "rules": [{"rule": str, "detail": str}],   # the policy's evidence: rules that held
        "policy_digest": str | null,
        "obligations": {...} | null, "output_obligations": {...} | null,
        "policy_input_digest": str | null,          # sha256 hex of the audited policy document
        "output_policy_input_digest": str | null
      },
      "pii_findings": [{"entity_type": str, "recognizer": str, "score": float,
                        "location": "input" | "output", "text_index": int | null,
                        "start": int, "end": int, "context_words": [str]}],
      "model_attribution": {"status": "pending" | "ok" | "not_applicable" | "skipped" | "failed",
                            "reason": str | null,     # a code from ATTRIBUTION_REASONS
                            "attribution": {...} | null},  # explain.types.Attribution JSON, iff ok
      "ml_scores": [{"name": str, "score": float, "threshold": float | null, "method": str,
                     "tokens": [str], "attributions": [float]}],
      "ml_scores_note": str | null             # says why the list is empty (never null then)
    }

Digests: :meth:`ExplanationRecord.digest` is the SHA-256 (hex) of the canonical bytes: any
change to any member changes it. :meth:`ExplanationRecord.evidence_digest` is the digest of
the record with its model attribution set back to ``pending``: it is known before the
attribution is (when the audit entry is written) and does not change when the final record
replaces the pending one, so an audit entry can carry it and a verifier can check a final
record against the signed audit trail (``final.evidence_digest() == entry's digest``).

Note: an ``ok`` attribution holds the prompt and output tokens the model saw (after redaction),
so a record is as sensitive as the request's text and must be access-checked like it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from explain import jsonread as jr
from explain.canonical import canonical_json
from explain.errors import ExplanationError
from explain.evidence import (
    ATTRIBUTION_REASONS,
    MESSAGE_MAX,
    DecisionEvidence,
    MlScore,
    ModelAttribution,
    PiiFinding,
    PolicyReason,
    PolicyRule,
    pii_findings_from_audit,
)
from gateway.types import AuditRecord, ExplainLevel

__all__ = [
    "ATTRIBUTION_REASONS",
    "FORMAT_VERSION",
    "NO_ML_SCORES_NOTE",
    "DecisionEvidence",
    "ExplanationError",
    "ExplanationRecord",
    "MlScore",
    "ModelAttribution",
    "PiiFinding",
    "PolicyReason",
    "PolicyRule",
    "now_rfc3339",
    "pii_findings_from_audit",
]

FORMAT_VERSION = 1
LEVELS: tuple[ExplainLevel, ...] = ("none", "summary", "full")
NO_ML_SCORES_NOTE = "the policy used no ML scores"
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|\+00:00)")


def now_rfc3339() -> str:
    """The current UTC time as a record's ``created`` (milliseconds; the audit trail's form)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ExplanationRecord:
    """Everything that explains one request's outcome (see the module docstring for the JSON)."""

    request_id: str
    created: str
    principal_id: str
    tenant: str
    level: ExplainLevel
    decision: DecisionEvidence
    model_attribution: ModelAttribution
    model: str | None = None
    model_digest: str | None = None
    pii_findings: tuple[PiiFinding, ...] = ()
    ml_scores: tuple[MlScore, ...] = ()
    ml_scores_note: str | None = field(default=None)

    def __post_init__(self) -> None:
        jr.text(self.request_id, "request_id", allow_empty=False)
        if not isinstance(self.created, str) or not _CREATED.fullmatch(self.created):
            raise jr.fail(
                "created", "must be an RFC 3339 UTC time such as 2026-11-29T12:00:00.000Z or ...+00:00"
            )
        try:
            datetime.fromisoformat(self.created)
        except ValueError as exc:
            raise jr.fail("created", "is not a valid date and time") from exc
        jr.text(self.principal_id, "principal_id", allow_empty=False)
        jr.text(self.tenant, "tenant")
        jr.choice(self.level, "level", LEVELS)
        jr.optional(self.model, "model", jr.text)
        jr.optional(self.model_digest, "model_digest", jr.text)
        if not isinstance(self.decision, DecisionEvidence):
            raise jr.fail("decision", "must be a DecisionEvidence")
        if not isinstance(self.model_attribution, ModelAttribution):
            raise jr.fail("model_attribution", "must be a ModelAttribution")
        if not all(isinstance(f, PiiFinding) for f in self.pii_findings):
            raise jr.fail("pii_findings", "must hold PiiFinding values")
        if not all(isinstance(s, MlScore) for s in self.ml_scores):
            raise jr.fail("ml_scores", "must hold MlScore values")
        if self.ml_scores_note is None and not self.ml_scores:
            object.__setattr__(self, "ml_scores_note", NO_ML_SCORES_NOTE)
        jr.optional(self.ml_scores_note, "ml_scores_note", lambda v, p: jr.text(v, p, MESSAGE_MAX))
        if self.decision.decision != "allow" and self.model_attribution.status in ("pending", "ok"):
            raise jr.fail(
                "model_attribution.status", f"cannot be {self.model_attribution.status} for a refusal"
            )

    @classmethod
    def from_audit(
        cls,
        audit: AuditRecord,
        *,
        level: ExplainLevel,
        model_attribution: ModelAttribution | None = None,
        reasons: tuple[PolicyReason, ...] | None = None,
        rules: tuple[PolicyRule, ...] = (),
        pii_findings: tuple[PiiFinding, ...] | None = None,
        ml_scores: tuple[MlScore, ...] = (),
        ml_scores_note: str | None = None,
    ) -> ExplanationRecord:
        """The record of the request an audit record describes. Without ``model_attribution``:
        ``pending`` for an allowed request (``skipped``/``disabled`` at level ``none``),
        ``not_applicable`` (``denied``/``not_generated``) otherwise. ``pii_findings`` default to
        the audit record's (without context words); ``rules`` are the policy's evidence."""
        if model_attribution is None:
            if audit.decision == "allow":
                pending = level != "none"
                model_attribution = (
                    ModelAttribution.pending() if pending else ModelAttribution("skipped", "disabled")
                )
            else:
                reason = "denied" if audit.decision == "deny" else "not_generated"
                model_attribution = ModelAttribution("not_applicable", reason)
        return cls(
            request_id=audit.request_id,
            created=audit.time,
            principal_id=audit.principal_id,
            tenant=audit.tenant,
            level=level,
            decision=DecisionEvidence.from_audit(audit, reasons, rules),
            model_attribution=model_attribution,
            model=audit.model,
            model_digest=audit.model_digest,
            pii_findings=pii_findings
            if pii_findings is not None
            else pii_findings_from_audit(audit.findings),
            ml_scores=ml_scores,
            ml_scores_note=ml_scores_note,
        )

    def with_attribution(self, model_attribution: ModelAttribution) -> ExplanationRecord:
        """The final record: this pending one with the worker's answer (or why there is none)."""
        if self.model_attribution.status != "pending":
            raise ExplanationError(
                f"explanation {self.request_id}: the attribution is already {self.model_attribution.status}"
            )
        return replace(self, model_attribution=model_attribution)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "request_id": self.request_id,
            "created": self.created,
            "principal_id": self.principal_id,
            "tenant": self.tenant,
            "model": self.model,
            "model_digest": self.model_digest,
            "level": self.level,
            "decision": self.decision.to_json(),
            "pii_findings": [f.to_json() for f in self.pii_findings],
            "model_attribution": self.model_attribution.to_json(),
            "ml_scores": [s.to_json() for s in self.ml_scores],
            "ml_scores_note": self.ml_scores_note,
        }

    def canonical_bytes(self) -> bytes:
        """The record as canonical JSON (RFC 8785): what is stored and hashed."""
        return canonical_json(self.to_json())

    def digest(self) -> str:
        """SHA-256 hex of the canonical bytes."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def evidence_digest(self) -> str:
        """The digest of this record with the model attribution pending (see the module docstring)."""
        document = self.to_json()  # not through the constructor: a refusal is never pending itself
        document["model_attribution"] = ModelAttribution.pending().to_json()
        return hashlib.sha256(canonical_json(document)).hexdigest()

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any], *, digest: str | None = None) -> ExplanationRecord:
        """Parse a record (JSON text or the parsed object) and check every member; with ``digest``,
        also check the record hashes to it. Raise ExplanationError saying what is wrong."""
        value = data if isinstance(data, dict) else jr.loads(data)
        d = jr.obj(value, "$", _RECORD_FIELDS)
        if d["v"] != FORMAT_VERSION or isinstance(d["v"], bool):
            raise jr.fail("$.v", f"must be {FORMAT_VERSION} (this version reads format {FORMAT_VERSION})")
        record = jr.building(
            lambda: cls(
                request_id=jr.string(d["request_id"], "$.request_id", max_len=jr.ID_MAX),
                created=jr.string(d["created"], "$.created", max_len=64),
                principal_id=jr.string(d["principal_id"], "$.principal_id", max_len=jr.ID_MAX),
                tenant=jr.string(d["tenant"], "$.tenant", max_len=jr.ID_MAX),
                level=jr.choice(d["level"], "$.level", LEVELS),  # type: ignore[arg-type]
                decision=DecisionEvidence.from_json(d["decision"], "$.decision"),
                model_attribution=ModelAttribution.from_json(d["model_attribution"], "$.model_attribution"),
                model=jr.optional(d["model"], "$.model", jr.string),
                model_digest=jr.optional(d["model_digest"], "$.model_digest", jr.string),
                pii_findings=jr.array(
                    d["pii_findings"], "$.pii_findings", PiiFinding.from_json, max_len=4096
                ),
                ml_scores=jr.array(d["ml_scores"], "$.ml_scores", MlScore.from_json, max_len=256),
                ml_scores_note=jr.optional(d["ml_scores_note"], "$.ml_scores_note", jr.string),
            ),
            "explanation record",
        )
        if not record.ml_scores and d["ml_scores_note"] is None:
            raise jr.fail("$.ml_scores_note", "must say why there are no ML scores")
        if digest is not None and record.digest() != digest:
            raise ExplanationError(
                f"explanation {record.request_id}: digest mismatch (altered after it was written)"
            )
        return record


_RECORD_FIELDS = (
    "v",
    "request_id",
    "created",
    "principal_id",
    "tenant",
    "model",
    "model_digest",
    "level",
    "decision",
    "pii_findings",
    "model_attribution",
    "ml_scores",
    "ml_scores_note",
)
