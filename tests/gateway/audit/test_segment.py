"""Retention by segments: rolling archives the log whole and starts a segment whose every
checkpoint commits to the archived one's last checkpoint; nothing is silently deleted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.segment import next_origin, roll_log
from gateway.audit.store import AuditStore
from gateway.audit.verify import open_checkpoint, verify_log
from gateway.errors import AuditError, AuditVerifyError

from .conftest import KeyPair, make_record


def fill(db: Path, keypair: KeyPair, first: int, last: int, origin: str | None = None) -> None:
    with AuditLog(db, keypair.private_key, origin=origin) as log:
        for n in range(first, last + 1):
            log.append(make_record(n))


def test_next_origin() -> None:
    assert next_origin("llmos.audit/ab12") == "llmos.audit/ab12/segment-2"
    assert next_origin("llmos.audit/ab12/segment-2") == "llmos.audit/ab12/segment-3"


def test_a_roll_archives_the_log_and_links_the_next_segment(
    db_path: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    fill(db_path, keypair, 1, 5, origin="llmos.test/log")
    report = roll_log(db_path, tmp_path / "archive", keypair.private_key)
    assert (report.entries, report.previous_origin, report.origin) == (
        5,
        "llmos.test/log",
        "llmos.test/log/segment-2",
    )
    assert report.archived.stat().st_mode & 0o222 == 0  # read-only
    assert verify_log(report.archived, keypair.public_key).entries == 5  # the archive verifies alone
    fill(db_path, keypair, 6, 8)
    with AuditStore.open_readonly(db_path) as store:
        notes = [note for _, note, _ in store.checkpoints()]
    assert notes and all("previous-segment sha256:" in n for n in notes)
    assert open_checkpoint(notes[-1], keypair.public_key).origin == "llmos.test/log/segment-2"
    report2 = verify_log(db_path, keypair.public_key, previous_segment=report.archived)
    assert report2.entries == 3


def test_a_wrong_or_unlinked_previous_segment_is_caught(
    db_path: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    fill(db_path, keypair, 1, 5, origin="llmos.test/log")
    archived = roll_log(db_path, tmp_path / "archive", keypair.private_key).archived
    fill(db_path, keypair, 6, 7)
    other = tmp_path / "other.db"
    fill(other, keypair, 1, 5, origin="llmos.test/other")
    with pytest.raises(AuditVerifyError, match="not the one this log continues"):
        verify_log(db_path, keypair.public_key, previous_segment=other)
    with pytest.raises(AuditVerifyError, match="does not continue another segment"):
        verify_log(other, keypair.public_key, previous_segment=archived)
    conn = sqlite3.connect(db_path)  # remove the link from the metadata: the signed checkpoints keep it
    with conn:
        conn.execute("DELETE FROM audit_meta WHERE key = 'previous_segment'")
    conn.close()
    with pytest.raises(AuditVerifyError, match="previous segment, but its checkpoint is missing"):
        verify_log(db_path, keypair.public_key)


def test_an_empty_log_is_not_rolled(db_path: Path, keypair: KeyPair, tmp_path: Path) -> None:
    AuditLog(db_path, keypair.private_key).close()
    with pytest.raises(AuditError, match="nothing to roll"):
        roll_log(db_path, tmp_path / "archive", keypair.private_key)
