"""Read the gateway's audit log from a test (read-only; the server keeps writing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.audit.store import AuditStore


def entry(home: Path, request_id: str) -> dict[str, Any] | None:
    with AuditStore.open_readonly(home / "audit.db") as store:
        row = store.get(request_id)
    return None if row is None else dict(json.loads(row.body))


def count(home: Path) -> int:
    with AuditStore.open_readonly(home / "audit.db") as store:
        return sum(1 for _ in store.iter_entries())
