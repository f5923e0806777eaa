"""Retention by segments: old entries leave the live log only by rolling to a new segment.

``roll_log`` (gateway stopped) signs a last checkpoint of the live log, moves the file into an
archive directory (read-only), and starts a new log file in its place whose origin is the next
segment's (``<origin>/segment-2``, ``-3``, ...) and whose every checkpoint carries the extension
line ``previous-segment sha256:<hex>``: a commitment to the archived segment's last signed
checkpoint (kept in the new file's metadata). Nothing is deleted: the archived file verifies on
its own, and ``verify_log(..., previous_segment=ARCHIVE)`` checks the link. Deleting an archived
segment later is a deliberate act the new segment's checkpoints still testify to.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.errors import AuditError

_SEGMENT = re.compile(r"^(?P<base>.+)/segment-(?P<n>[0-9]{1,9})$")


@dataclass(frozen=True)
class RollReport:
    archived: Path
    entries: int
    previous_origin: str
    origin: str


def next_origin(origin: str) -> str:
    match = _SEGMENT.match(origin)
    if match is None:
        return f"{origin}/segment-2"
    return f"{match['base']}/segment-{int(match['n']) + 1}"


def roll_log(db_path: Path, archive_dir: Path, private_key: Ed25519PrivateKey) -> RollReport:
    """Archive the log at ``db_path`` and start its next segment there (the gateway must be
    stopped: this takes the file away from under any writer)."""
    with AuditLog(db_path, private_key) as log:
        final = log.checkpoint()
        origin = log.origin
    if final is None:
        raise AuditError(f"{db_path}: the log is empty: nothing to roll")
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / f"{origin.replace('/', '_')}-{final.size}.db"
    if target.exists():
        raise AuditError(f"{target} exists already: refusing to overwrite an archived segment")
    conn = sqlite3.connect(db_path)
    try:  # fold the WAL into the file, so that the file alone is the whole segment
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    db_path.rename(target)
    for suffix in ("-wal", "-shm"):
        leftover = db_path.with_name(db_path.name + suffix)
        if leftover.exists() and leftover.stat().st_size == 0:
            leftover.unlink()
    target.chmod(0o444)
    new_origin = next_origin(origin)
    AuditLog(db_path, private_key, origin=new_origin, previous_segment=final.note).close()
    return RollReport(target, final.size, origin, new_origin)
