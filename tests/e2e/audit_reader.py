"""Read the gateway's audit log from a test (read-only; the server keeps writing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.audit.entry import entry_view
from gateway.audit.store import AuditStore


def entry(home: Path, request_id: str, phase: str | None = None) -> dict[str, Any] | None:
    """The first entry of ``request_id`` (of ``phase`` when given), parsed."""
    with AuditStore.open_readonly(home / "audit.db") as store:
        row = store.get(request_id, phase)
    return None if row is None else dict(entry_view(row.body, row.openings))


def count(home: Path) -> int:
    with AuditStore.open_readonly(home / "audit.db") as store:
        return sum(1 for _ in store.iter_entries())


def entries(home: Path) -> list[dict[str, Any]]:
    with AuditStore.open_readonly(home / "audit.db") as store:
        return [dict(entry_view(row.body, row.openings)) for row in store.iter_entries()]
