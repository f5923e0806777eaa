"""The evidence an explanation record holds, pure: policy decision, PII findings, the model's
attribution status, ML scores. Each value checks itself when built and has ``to_json`` and
``from_json`` (the shapes are drawn in :mod:`explain.record`). No value here ever holds the
text of a PII finding: a finding says where, what kind, who found it and how sure.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from explain import jsonread as jr
from explain.canonical import canonical_json
from explain.errors import ExplanationError
from explain.types import Attribution
from gateway.types import AuditRecord

Outcome = Literal["allow", "deny", "invalid", "error"]
OUTCOMES: tuple[Outcome, ...] = ("allow", "deny", "invalid", "error")
AttributionStatus = Literal["pending", "ok", "not_applicable", "skipped", "failed"]
ATTRIBUTION_STATUSES: tuple[AttributionStatus, ...] = ("pending", "ok", "not_applicable", "skipped", "failed")
# The reason codes each status without an attribution may carry.
ATTRIBUTION_REASONS: dict[str, tuple[str, ...]] = {
    # nothing to explain: the request was refused or failed, or the model cannot be attributed
    "not_applicable": ("denied", "not_generated", "echo_model", "remote_model", "unsupported_model"),
    # could have been computed, was not: by load, sampling, configuration or the time budget
    "skipped": ("overload", "sampled_out", "disabled", "cut_short", "too_long"),
    # was attempted and did not produce a result
    "failed": ("worker_error", "timeout", "non_finite", "invalid_result", "interrupted"),
}
MESSAGE_MAX = 1024
_ENTITY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def _json_object_text(value: str | None, path: str) -> str | None:
    """A JSON object given as text (as the audit trail holds it), kept in canonical form."""
    if value is None:
        return None
    try:
        parsed = jr.loads(value)
    except ExplanationError as exc:
        raise jr.fail(path, f"is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise jr.fail(path, "must be a JSON object")
    return canonical_json(parsed).decode("utf-8")


@dataclass(frozen=True)
class PolicyReason:
    """One reason the policy gave (a stable code, and a message for people)."""

    code: str
    message: str = ""

    def __post_init__(self) -> None:
        jr.code(self.code, "reason.code")
        jr.text(self.message, "reason.message", MESSAGE_MAX)


@dataclass(frozen=True)
class PolicyRule:
    """One policy rule that held for the decision, and why (the policy's ``evidence``; no prompt
    text), e.g. ``access.role_permitted`` / ``obligations.redact``."""

    rule: str
    detail: str = ""

    def __post_init__(self) -> None:
        jr.text(self.rule, "rule.rule", 128, allow_empty=False)
        jr.text(self.detail, "rule.detail", MESSAGE_MAX)


@dataclass(frozen=True)
class DecisionEvidence:
    """The policy decision and what it was made on (what the audit entry holds, or its digest).

    ``rules`` are the policy rules that produced it (input and output phase), as the policy
    reported them. ``obligations``/``output_obligations`` are JSON object text (the audit
    entry's form); ``policy_input_digest`` is :func:`hashlib.sha256` hex of the audited policy
    document text.
    """

    decision: Outcome
    status: int
    reasons: tuple[PolicyReason, ...] = ()
    rules: tuple[PolicyRule, ...] = ()
    policy_digest: str | None = None
    obligations: str | None = None
    output_obligations: str | None = None
    policy_input_digest: str | None = None
    output_policy_input_digest: str | None = None

    def __post_init__(self) -> None:
        jr.choice(self.decision, "decision.decision", OUTCOMES)
        jr.integer(self.status, "decision.status", 100, 599)
        if not all(isinstance(r, PolicyReason) for r in self.reasons):
            raise jr.fail("decision.reasons", "must hold PolicyReason values")
        if not all(isinstance(r, PolicyRule) for r in self.rules):
            raise jr.fail("decision.rules", "must hold PolicyRule values")
        for name in ("policy_digest", "policy_input_digest", "output_policy_input_digest"):
            jr.optional(getattr(self, name), f"decision.{name}", jr.text)
        for name in ("obligations", "output_obligations"):
            object.__setattr__(self, name, _json_object_text(getattr(self, name), f"decision.{name}"))

    @classmethod
    def from_audit(
        cls,
        audit: AuditRecord,
        reasons: tuple[PolicyReason, ...] | None = None,
        rules: tuple[PolicyRule, ...] = (),
    ) -> DecisionEvidence:
        """The evidence an audit record holds; the policy documents by digest. ``reasons`` with
        messages replace the audit record's bare codes when the caller has them; ``rules`` are
        the policy's evidence (not in the audit record)."""
        return cls(
            decision=audit.decision,
            status=audit.status,
            reasons=reasons if reasons is not None else tuple(PolicyReason(code) for code in audit.reasons),
            rules=rules,
            policy_digest=audit.policy_digest,
            obligations=audit.obligations,
            output_obligations=audit.output_obligations,
            policy_input_digest=_sha256_text(audit.policy_input),
            output_policy_input_digest=_sha256_text(audit.output_policy_input),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "status": self.status,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "rules": [{"rule": r.rule, "detail": r.detail} for r in self.rules],
            "policy_digest": self.policy_digest,
            "obligations": None if self.obligations is None else json.loads(self.obligations),
            "output_obligations": None
            if self.output_obligations is None
            else json.loads(self.output_obligations),
            "policy_input_digest": self.policy_input_digest,
            "output_policy_input_digest": self.output_policy_input_digest,
        }

    @classmethod
    def from_json(cls, value: object, path: str) -> DecisionEvidence:
        d = jr.obj(value, path, cls._FIELDS)

        def reason(v: object, p: str) -> PolicyReason:
            r = jr.obj(v, p, ("code", "message"))
            return PolicyReason(
                jr.code(r["code"], f"{p}.code"), jr.text(r["message"], f"{p}.message", MESSAGE_MAX)
            )

        def rule(v: object, p: str) -> PolicyRule:
            r = jr.obj(v, p, ("rule", "detail"))
            return PolicyRule(
                jr.text(r["rule"], f"{p}.rule", 128, allow_empty=False),
                jr.text(r["detail"], f"{p}.detail", MESSAGE_MAX),
            )

        def obligations(v: object, p: str) -> str | None:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise jr.fail(p, "must be an object or null")
            return canonical_json(v).decode("utf-8")

        return cls(
            decision=jr.choice(d["decision"], f"{path}.decision", OUTCOMES),  # type: ignore[arg-type]
            status=jr.integer(d["status"], f"{path}.status", 100, 599),
            reasons=jr.array(d["reasons"], f"{path}.reasons", reason, max_len=256),
            rules=jr.array(d["rules"], f"{path}.rules", rule, max_len=256),
            policy_digest=jr.optional(d["policy_digest"], f"{path}.policy_digest", jr.text),
            obligations=obligations(d["obligations"], f"{path}.obligations"),
            output_obligations=obligations(d["output_obligations"], f"{path}.output_obligations"),
            policy_input_digest=jr.optional(d["policy_input_digest"], f"{path}.policy_input_digest", jr.text),
            output_policy_input_digest=jr.optional(
                d["output_policy_input_digest"], f"{path}.output_policy_input_digest", jr.text
            ),
        )

    _FIELDS = (
        "decision",
        "status",
        "reasons",
        "rules",
        "policy_digest",
        "obligations",
        "output_obligations",
        "policy_input_digest",
        "output_policy_input_digest",
    )


LOCATIONS = ("input", "output", "tool_call")


@dataclass(frozen=True)
class PiiFinding:
    """A sensitive span a recogniser found: where, what kind, how sure, and which context words
    raised the score. It has no value field, by design: the record never holds the text."""

    entity_type: str
    recognizer: str
    score: float
    location: Literal["input", "output", "tool_call"]  # tool_call: a call the model made
    start: int
    end: int
    text_index: int | None = None  # which input text (message), or which tool call; None for the output
    context_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.entity_type, str) or not _ENTITY.fullmatch(self.entity_type):
            raise jr.fail("pii.entity_type", "must be an entity type name such as EMAIL_ADDRESS")
        jr.text(self.recognizer, "pii.recognizer", 128, allow_empty=False)
        score = jr.number(self.score, "pii.score")
        if not 0.0 <= score <= 1.0:
            raise jr.fail("pii.score", "must lie in [0, 1]")
        object.__setattr__(self, "score", score)
        jr.choice(self.location, "pii.location", LOCATIONS)
        jr.integer(self.start, "pii.start")
        jr.integer(self.end, "pii.end", self.start)
        if (self.text_index is None) != (self.location == "output"):
            raise jr.fail("pii.text_index", "is given for input and tool-call findings, and only for them")
        jr.optional(self.text_index, "pii.text_index", jr.integer)
        if len(self.context_words) > 32:
            raise jr.fail("pii.context_words", "has more than 32 words")
        for word in self.context_words:
            jr.text(word, "pii.context_words[]", 64, allow_empty=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "entity_type": self.entity_type,
            "recognizer": self.recognizer,
            "score": self.score,
            "location": self.location,
            "text_index": self.text_index,
            "start": self.start,
            "end": self.end,
            "context_words": list(self.context_words),
        }

    @classmethod
    def from_json(cls, value: object, path: str) -> PiiFinding:
        d = jr.obj(value, path, cls._FIELDS)
        return jr.building(
            lambda: cls(
                entity_type=jr.string(d["entity_type"], f"{path}.entity_type", max_len=64),
                recognizer=jr.string(d["recognizer"], f"{path}.recognizer", max_len=128),
                score=jr.number(d["score"], f"{path}.score"),
                location=jr.choice(d["location"], f"{path}.location", LOCATIONS),  # type: ignore[arg-type]
                start=jr.integer(d["start"], f"{path}.start"),
                end=jr.integer(d["end"], f"{path}.end"),
                text_index=jr.optional(d["text_index"], f"{path}.text_index", jr.integer),
                context_words=jr.array(
                    d["context_words"],
                    f"{path}.context_words",
                    lambda v, p: jr.string(v, p, max_len=64),
                    max_len=32,
                ),
            ),
            path,
        )

    _FIELDS = (
        "entity_type",
        "recognizer",
        "score",
        "location",
        "text_index",
        "start",
        "end",
        "context_words",
    )


def pii_findings_from_audit(findings: str | None) -> tuple[PiiFinding, ...]:
    """Findings from an audit record's ``findings`` JSON (``gateway.pipeline.findings_document``:
    ``{"input": [{"text", "type", "start", "end", "recognizer", "score"}], "output": [...]}``;
    an output row with ``call`` is in that tool call's arguments).
    Context words are not in the audit trail; build :class:`PiiFinding` directly to add them."""
    if findings is None:
        return ()
    doc = jr.obj(jr.loads(findings), "findings", ("input", "output"))
    result: list[PiiFinding] = []
    for location in ("input", "output"):
        rows = jr.array(doc[location], f"findings.{location}", lambda v, p: v)
        result.extend(
            _audit_finding(row, location, f"findings.{location}[{i}]") for i, row in enumerate(rows)
        )
    return tuple(result)


def _audit_finding(row: object, location: Literal["input", "output"], path: str) -> PiiFinding:
    fields = ("type", "start", "end", "recognizer", "score") + (("text",) if location == "input" else ())
    r = jr.obj(row, path, fields, () if location == "input" else ("call",))
    call = location == "output" and "call" in r
    return jr.building(
        lambda: PiiFinding(
            entity_type=r["type"],
            recognizer=r["recognizer"],
            score=r["score"],
            location="tool_call" if call else location,
            start=r["start"],
            end=r["end"],
            text_index=r["call"] if call else r.get("text"),
        ),
        path,
    )


@dataclass(frozen=True)
class ModelAttribution:
    """The model's token attribution, or the status that says why there is none (yet).

    ``pending``: asked of the worker, not back yet; ``ok``: ``attribution`` holds it (it may be
    ``cut_short``); ``not_applicable``/``skipped``/``failed`` carry a ``reason`` code from
    :data:`ATTRIBUTION_REASONS`.
    """

    status: AttributionStatus
    reason: str | None = None
    attribution: Attribution | None = None

    def __post_init__(self) -> None:
        jr.choice(self.status, "model_attribution.status", ATTRIBUTION_STATUSES)
        if (self.attribution is not None) != (self.status == "ok"):
            raise jr.fail("model_attribution.attribution", "is given when the status is ok, and only then")
        if self.attribution is not None and not isinstance(self.attribution, Attribution):
            raise jr.fail("model_attribution.attribution", "must be an Attribution")
        allowed = ATTRIBUTION_REASONS.get(self.status)
        if allowed is None:
            if self.reason is not None:
                raise jr.fail("model_attribution.reason", f"must be null when the status is {self.status}")
        elif self.reason not in allowed:
            raise jr.fail("model_attribution.reason", f"must be one of {', '.join(allowed)} ({self.status})")

    @classmethod
    def pending(cls) -> ModelAttribution:
        return cls("pending")

    @classmethod
    def ok(cls, attribution: Attribution) -> ModelAttribution:
        return cls("ok", attribution=attribution)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "attribution": None if self.attribution is None else self.attribution.to_json(),
        }

    @classmethod
    def from_json(cls, value: object, path: str) -> ModelAttribution:
        d = jr.obj(value, path, ("status", "reason", "attribution"))
        attribution = d["attribution"]
        return jr.building(
            lambda: cls(
                status=jr.choice(d["status"], f"{path}.status", ATTRIBUTION_STATUSES),  # type: ignore[arg-type]
                reason=jr.optional(d["reason"], f"{path}.reason", jr.code),
                attribution=None
                if attribution is None
                else Attribution.from_json(attribution, f"{path}.attribution"),
            ),
            path,
        )


@dataclass(frozen=True)
class MlScore:
    """A score an ML model gave the policy (a classifier's, say), with the attribution of that
    score to the tokens of the text it scored."""

    name: str
    score: float
    method: str
    tokens: tuple[str, ...]
    attributions: tuple[float, ...]
    threshold: float | None = None

    def __post_init__(self) -> None:
        jr.code(self.name, "ml_score.name")
        jr.code(self.method, "ml_score.method")
        object.__setattr__(self, "score", jr.number(self.score, "ml_score.score"))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", jr.number(self.threshold, "ml_score.threshold"))
        if len(self.tokens) != len(self.attributions):
            raise jr.fail("ml_score.attributions", "must have one score per token")
        for token in self.tokens:
            jr.string(token, "ml_score.tokens[]", max_len=1024)
        object.__setattr__(
            self, "attributions", tuple(jr.number(a, "ml_score.attributions[]") for a in self.attributions)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": self.score,
            "threshold": self.threshold,
            "method": self.method,
            "tokens": list(self.tokens),
            "attributions": list(self.attributions),
        }

    @classmethod
    def from_json(cls, value: object, path: str) -> MlScore:
        d = jr.obj(value, path, ("name", "score", "threshold", "method", "tokens", "attributions"))
        return jr.building(
            lambda: cls(
                name=jr.string(d["name"], f"{path}.name", max_len=64),
                score=jr.number(d["score"], f"{path}.score"),
                threshold=jr.optional(d["threshold"], f"{path}.threshold", jr.number),
                method=jr.string(d["method"], f"{path}.method", max_len=64),
                tokens=jr.array(d["tokens"], f"{path}.tokens", lambda v, p: jr.string(v, p, max_len=1024)),
                attributions=jr.array(d["attributions"], f"{path}.attributions", jr.number),
            ),
            path,
        )


def _sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()
