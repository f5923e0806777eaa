"""Replay recorded policy inputs against a candidate policy set, and report what would change.

The audit trail keeps each decision's policy input (PII-free: counts of findings by type, never
text) and the input decision's obligations. Replaying them against a candidate set shows a
reviewer, before a policy change is merged, every recorded decision it would flip: allow to
deny, deny to allow, or different obligations. Pure except for reading the audit store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit.entry import entry_view
from gateway.audit.store import AuditStore
from gateway.errors import PolicyError
from gateway.pipeline import obligations_document
from gateway.policy.engine import Phase, PolicyEngine

# Reason codes of denials that enforce an allow's obligations rather than a policy deny.
ENFORCEMENT_CODES = frozenset({"sensitive_data_blocked"})


@dataclass(frozen=True)
class Recorded:
    """One recorded decision: its input document and what was decided then."""

    request_id: str
    time: str
    principal_id: str
    endpoint: str
    model: str | None
    phase: Phase
    document: dict[str, Any]
    allow: bool
    reasons: tuple[str, ...]
    obligations: dict[str, Any] | None  # as recorded (None: not recorded, not compared)


@dataclass(frozen=True)
class Change:
    recorded: Recorded
    allow: bool
    reasons: tuple[str, ...]
    obligations: dict[str, Any] | None
    kinds: tuple[str, ...]  # "allow -> deny", "deny -> allow", "obligations", "error"


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0  # entries without a recorded policy decision (rate limited, invalid, ...)
    changes: list[Change] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(kind in c.kinds for c in self.changes)


def parse_time(value: str) -> datetime:
    """An RFC 3339 time or a date (midnight UTC)."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def recorded_decisions(
    entries: Iterable[dict[str, Any]], *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Recorded | None]:
    """The decisions in audit entries (None for an entry that holds none)."""
    for e in entries:
        when = parse_time(str(e["time"]))
        if (since and when < since) or (until and when >= until):
            continue
        # A stream has two entries: its start holds the input decision, its end the output one.
        phase = e.get("phase", "complete")
        if not e.get("policy_input") or e.get("decision") not in ("allow", "deny"):
            if phase != "stream_end":
                yield None
            continue
        output = e.get("output_policy_input")
        base = {
            "request_id": e["request_id"],
            "time": e["time"],
            "principal_id": e["principal_id"],
            "endpoint": e["endpoint"],
            "model": e.get("model"),
        }
        reasons = tuple(e.get("reasons") or ())
        # A denial by enforcing an allow's obligation (redact: block) was an allow by policy.
        enforced = any(r in ENFORCEMENT_CODES for r in reasons)
        # The output decision is only asked after an input allow.
        input_allow = (
            bool(output) or e["decision"] == "allow" or phase == "stream_end" or (enforced and not output)
        )
        if phase != "stream_end":
            yield Recorded(
                **base,
                phase="input",
                document=json.loads(str(e["policy_input"])),
                allow=input_allow,
                reasons=() if input_allow else reasons,
                obligations=json.loads(str(e["obligations"])) if e.get("obligations") else None,
            )
        if output:
            yield Recorded(
                **base,
                phase="output",
                document=json.loads(str(output)),
                allow=e["decision"] == "allow" or enforced,
                reasons=() if e["decision"] == "allow" or enforced else reasons,
                obligations=json.loads(str(e["output_obligations"])) if e.get("output_obligations") else None,
            )


def read_audit(db: Path) -> list[dict[str, Any]]:
    with AuditStore.open_readonly(db) as store:
        return [entry_view(row.body, row.openings) for row in store.iter_entries()]


def replay(decisions: Iterable[Recorded | None], candidate: PolicyEngine) -> ReplayReport:
    report = ReplayReport()
    for rec in decisions:
        if rec is None:
            report.skipped += 1
            continue
        if rec.phase == "output" and not candidate.has_output_policy:
            report.skipped += 1
            continue
        report.replayed += 1
        try:
            decision = candidate.decide(rec.document, rec.phase)
        except PolicyError as exc:
            report.changes.append(Change(rec, False, (exc.code,), None, ("error",)))
            continue
        obligations = obligations_document(decision.obligations)
        kinds: list[str] = []
        if rec.allow != decision.allow:
            kinds.append("allow -> deny" if rec.allow else "deny -> allow")
        elif decision.allow and rec.obligations is not None and obligations != rec.obligations:
            kinds.append("obligations")
        if kinds:
            report.changes.append(
                Change(
                    rec, decision.allow, tuple(r.code for r in decision.reasons), obligations, tuple(kinds)
                )
            )
    return report


def _outcome(allow: bool, reasons: tuple[str, ...]) -> str:
    return "allow" if allow else "deny (" + ", ".join(reasons) + ")"


def _obligation_diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    if before is None or after is None:
        return ""
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return "; ".join(f"{k}: {json.dumps(before.get(k))} -> {json.dumps(after.get(k))}" for k in keys)


def _summary(report: ReplayReport) -> str:
    return (
        f"{report.replayed} decisions replayed, {len(report.changes)} would change "
        f"({report.count('allow -> deny')} allow -> deny, {report.count('deny -> allow')} deny -> allow, "
        f"{report.count('obligations')} obligations changed, {report.count('error')} errors); "
        f"{report.skipped} entries without a replayable decision skipped"
    )


def render_text(report: ReplayReport) -> str:
    lines = [_summary(report)]
    for c in report.changes:
        r = c.recorded
        detail = _obligation_diff(r.obligations, c.obligations) if "obligations" in c.kinds else ""
        lines.append(
            f"{', '.join(c.kinds):<14} {r.time} {r.request_id} {r.principal_id} {r.endpoint} "
            f"{r.model or '-'} [{r.phase}] was {_outcome(r.allow, r.reasons)},"
            f" now {_outcome(c.allow, c.reasons)}" + (f"  {detail}" if detail else "")
        )
    return "\n".join(lines)


def render_markdown(report: ReplayReport, candidate: str) -> str:
    out = [
        f"### Policy replay: `{candidate}`",
        "",
        _summary(report) + ".",
        "",
    ]
    if not report.changes:
        out.append("No recorded decision changes.")
        return "\n".join(out)
    out += [
        "| change | time | request | principal | endpoint | model | phase | was | now | obligations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.changes:
        r = c.recorded
        detail = _obligation_diff(r.obligations, c.obligations) if "obligations" in c.kinds else ""
        cells = [
            ", ".join(c.kinds),
            r.time,
            f"`{r.request_id}`",
            f"`{r.principal_id}`",
            r.endpoint,
            r.model or "",
            r.phase,
            _outcome(r.allow, r.reasons),
            _outcome(c.allow, c.reasons),
            detail,
        ]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(out)
