"""Finding request outcomes in the audit log (the operator console's audit explorer).

:func:`search` walks the log backwards from ``before_seq`` in pages, opens each outcome entry
(sealed fields with their openings, where kept) and keeps those matching every filter, until it
has ``limit`` matches, has read ``max_scan`` entries (5000: a bounded cost per call), or has
passed ``since`` by more than an hour; the caller continues from ``next_before``.
Filters compare exactly (``tenant``, ``principal_id``, ``model``, ``decision``) or by time
(``since`` inclusive, ``until`` exclusive, RFC 3339 UTC strings compared as the log writes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from gateway.audit.entry import decode_openings, open_sealed, parse_entry
from gateway.audit.store import StoredEntry
from gateway.errors import AuditError

PAGE = 500
SLACK_S = 3600  # a request's entry is written when it ends: at most this long after its time
SUMMARY_FIELDS = (
    "time",
    "request_id",
    "endpoint",
    "tenant",
    "principal_id",
    "model",
    "decision",
    "status",
    "reasons",
    "latency_ms",
    "phase",
    "trace_id",
)


@dataclass(frozen=True)
class Filters:
    since: str | None = None
    until: str | None = None
    tenant: str | None = None
    principal_id: str | None = None
    model: str | None = None
    decision: str | None = None

    def before_window(self, entry: dict[str, Any]) -> bool:
        """The entry is well before ``since``: entries are appended as requests end, so their
        times are nearly in order; past this slack, older ones cannot match."""
        time = entry.get("time")
        return self.since is not None and isinstance(time, str) and time < self.since_with_slack

    @cached_property
    def since_with_slack(self) -> str:
        assert self.since is not None
        return (datetime.fromisoformat(self.since) - timedelta(seconds=SLACK_S)).isoformat(
            timespec="milliseconds"
        )

    def match(self, entry: dict[str, Any]) -> bool:
        time = entry.get("time")
        if not isinstance(time, str):
            return False
        if self.since is not None and time < self.since:
            return False
        if self.until is not None and time >= self.until:
            return False
        for name in ("tenant", "principal_id", "model", "decision"):
            wanted = getattr(self, name)
            if wanted is not None and entry.get(name) != wanted:
                return False
        return True


@dataclass(frozen=True)
class Found:
    entries: list[dict[str, Any]]  # summaries, newest first, each with its seq
    next_before: int | None  # continue from here (None: the start of the log was reached)
    scanned: int


def search(
    page: Callable[[int, int], list[StoredEntry]],
    head_seq: int,
    filters: Filters,
    *,
    before_seq: int | None = None,
    limit: int = 50,
    max_scan: int = 5_000,
) -> Found:
    """``page(before_seq, n)``: ``AuditStore.outcomes_before``. Unreadable entries are skipped
    (``llmos audit verify`` is the tool that names them)."""
    found: list[dict[str, Any]] = []
    scanned = 0
    cursor = head_seq + 1 if before_seq is None else before_seq
    for row in _rows(page, cursor):
        scanned += 1
        cursor = row.seq
        entry = _open(row)
        if entry is not None and filters.before_window(entry):
            return Found(found, None, scanned)  # older than ``since`` from here on
        if entry is not None and filters.match(entry):
            found.append({"seq": row.seq, **{k: entry.get(k) for k in SUMMARY_FIELDS}})
            if len(found) >= limit:
                return Found(found, cursor, scanned)
        if scanned >= max_scan:
            return Found(found, cursor, scanned)
    return Found(found, None, scanned)


def _rows(page: Callable[[int, int], list[StoredEntry]], before: int) -> Iterator[StoredEntry]:
    while True:
        rows = page(before, PAGE)
        yield from rows
        if len(rows) < PAGE:
            return
        before = rows[-1].seq


def _open(row: StoredEntry) -> dict[str, Any] | None:
    if not isinstance(row.body, str):
        return None
    try:
        return open_sealed(
            parse_entry(row.body.encode("utf-8", errors="surrogateescape")), decode_openings(row.openings)
        )
    except AuditError:
        return None
