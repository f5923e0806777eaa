"""gateway.audit.integrator and pull against a real PostgreSQL (tests/pgserver.py): appended
entries get their place in one log that verifies offline; one integrator at a time; a new
integrator continues where the last committed batch ended; tampering is caught."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.entry import prepare_entry
from gateway.audit.integrator import Integrator
from gateway.audit.pull import pull_shared
from gateway.audit.shared import IntegratorLease, SharedQueue
from gateway.audit.sharedlog import SharedAuditLog
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_log
from gateway.errors import AuditError, AuditVerifyError
from tests.pgserver import bindir

from .conftest import make_record

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL is not installed (make services)")


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def append(dsn: str, numbers: range) -> None:
    queue = SharedQueue(dsn)
    try:
        for n in numbers:
            queue.append(prepare_entry(make_record(n)))
    finally:
        queue.close()


def pulled(dsn: str, tmp_path: Path, name: str = "pulled.db") -> Path:
    out = tmp_path / name
    pull_shared(dsn, out)
    return out


def test_appended_entries_are_integrated_into_a_log_that_verifies(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    append(dsn, range(1, 8))
    integrator = Integrator(dsn, key, origin="test.shared/log", checkpoint_every=5)
    try:
        assert integrator.step() == 7
        assert integrator.step() == 0  # nothing more
        append(dsn, range(8, 11))
        assert integrator.step() == 3
    finally:
        integrator.release()

    db = pulled(dsn, tmp_path)
    report = verify_log(db, [key.public_key()])
    assert report.entries == 10
    assert report.origin == "test.shared/log"
    assert report.signed_head  # the head of the last batch covers all ten
    assert report.checkpoints == 1  # checkpoint_every=5: the first batch of 7 made one
    with AuditStore.open_readonly(db) as store:
        ids = [e.request_id for e in store.iter_entries()]
    assert ids == [f"req-{n:04d}" for n in range(1, 11)]  # append order


def test_only_the_lease_holder_integrates(dsn: str, key: Ed25519PrivateKey) -> None:
    append(dsn, range(1, 4))
    first, second = Integrator(dsn, key), Integrator(dsn, key)
    try:
        assert first.step() == 3
        append(dsn, range(4, 6))
        assert second.step() == 0 and not second.holds_lease
        assert first.step() == 2
    finally:
        first.release()
        second.release()


def test_a_new_integrator_continues_after_the_last_committed_batch(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    append(dsn, range(1, 6))
    first, second = Integrator(dsn, key, checkpoint_every=2), Integrator(dsn, key, checkpoint_every=2)
    try:
        assert first.step() == 5
        append(dsn, range(6, 9))
        pid = first.lease.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:  # the holder's session dies
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert second.step() == 3  # takes over at seq 6
        with pytest.raises(AuditError):
            first.step()  # its session is gone: it drops what it believed and writes nothing
        assert not first.holds_lease
        assert first.step() == 0  # a new session, and the lease is taken
    finally:
        first.release()
        second.release()
    report = verify_log(pulled(dsn, tmp_path), [key.public_key()])
    assert report.entries == 8 and report.checkpoints == 2


def test_a_batch_cut_off_before_commit_leaves_no_trace(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    append(dsn, range(1, 4))
    integrator = Integrator(dsn, key)
    try:
        assert integrator.step() == 3
        append(dsn, range(4, 7))
        conn = integrator.lease.connection

        def fail(*_: object) -> None:
            # Inside the batch's transaction, after the rows were placed: the process "dies".
            raise psycopg.OperationalError("connection lost")

        real = integrator._sign
        integrator._sign = fail  # type: ignore[method-assign]
        with pytest.raises(AuditError):
            integrator.step()
        assert conn.closed  # the lease's session is gone with its open batch
        integrator._sign = real  # type: ignore[method-assign]
        assert integrator.step() == 3  # reloaded from the committed head: 4, 5, 6 again
    finally:
        integrator.release()
    report = verify_log(pulled(dsn, tmp_path), [key.public_key()])
    assert report.entries == 6


def test_the_signing_key_and_origin_are_the_logs(dsn: str, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    append(dsn, range(1, 3))
    integrator = Integrator(dsn, key, origin="test.shared/one")
    try:
        assert integrator.step() == 2
    finally:
        integrator.release()
    other = Integrator(dsn, key, origin="test.shared/two")
    with pytest.raises(AuditError, match="origin"):
        other.step()
    other.release()
    with pytest.raises(AuditVerifyError):  # another key cannot vouch for this log
        verify_log(pulled(dsn, tmp_path), [Ed25519PrivateKey.generate().public_key()])


def test_an_entry_altered_in_postgresql_fails_verification(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    append(dsn, range(1, 5))
    integrator = Integrator(dsn, key)
    try:
        assert integrator.step() == 4
    finally:
        integrator.release()
    with psycopg.connect(dsn, autocommit=True) as admin:
        changed = admin.execute(
            "UPDATE audit_shared SET body = convert_to(replace(convert_from(body, 'UTF8'), 'acme', 'acmf'),"
            " 'UTF8') WHERE seq = 2 AND position('acme'::bytea in body) > 0"
        )
        assert changed.rowcount == 1
    with pytest.raises(AuditVerifyError) as caught:
        verify_log(pulled(dsn, tmp_path), [key.public_key()])
    assert caught.value.seq == 2


def test_pull_refuses_an_existing_file_and_an_empty_log(dsn: str, tmp_path: Path) -> None:
    existing = tmp_path / "there.db"
    existing.write_bytes(b"")
    with pytest.raises(AuditError, match="exists"):
        pull_shared(dsn, existing)
    SharedQueue(dsn).close()  # tables, no integrator yet
    with pytest.raises(AuditError, match="no integrator"):
        pull_shared(dsn, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()


def test_a_row_that_is_not_an_entry_is_set_aside_never_signed(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    append(dsn, range(1, 3))
    with psycopg.connect(dsn, autocommit=True) as conn:  # not from a replica: garbage parts
        conn.execute(
            "INSERT INTO audit_shared (request_id, phase, body_before, body_between, body_after, openings)"
            " VALUES ('req-bad', 'complete', 'x', 'y', 'z', '')"
        )
    append(dsn, range(3, 5))
    integrator = Integrator(dsn, key)
    try:
        assert integrator.step() == 4
    finally:
        integrator.release()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT seq, rejected FROM audit_shared WHERE request_id = 'req-bad'").fetchone()
    assert row[0] is None and row[1]
    report = verify_log(pulled(dsn, tmp_path), [key.public_key()])
    assert report.entries == 4


def test_an_idle_integrator_writes_nothing(dsn: str, key: Ed25519PrivateKey) -> None:
    append(dsn, range(1, 3))
    integrator = Integrator(dsn, key)
    try:
        assert integrator.step() == 2

        def head_row_version() -> tuple[str, str]:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT xmin::text, xmax::text FROM audit_shared_meta WHERE key = 'head_seq'"
                ).fetchone()
            return row[0], row[1]

        before = head_row_version()
        for _ in range(20):
            assert integrator.step() == 0
        assert head_row_version() == before  # not even locked FOR UPDATE
    finally:
        integrator.release()


FROZEN = """
import sys, time
from gateway.audit.shared import IntegratorLease
lease = IntegratorLease(sys.argv[1], idle_timeout_ms=3000)  # slack for the refusal below
assert lease.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_frozen_holder_loses_the_lease(dsn: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", FROZEN, dsn], stdout=subprocess.PIPE, text=True)
    other = IntegratorLease(dsn)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGSTOP)  # alive, its kernel still answers, but it does nothing
        assert not other.try_acquire()
        deadline = time.monotonic() + 15
        while not other.try_acquire():
            assert time.monotonic() < deadline, "the frozen holder kept the lease"
            time.sleep(0.2)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
        other.release()


def test_closing_a_replica_keeps_a_last_checkpoint_and_refuses_later_appends(
    dsn: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = SharedAuditLog(dsn, key, checkpoint_every=1000, checkpoint_interval_s=3600, poll_s=0.01)
    for n in range(1, 4):
        log.append(make_record(n))
    integrator = log.integrator
    assert integrator is not None
    deadline = time.monotonic() + 10
    while integrator.integrated < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(make_record(4))
    report = verify_log(pulled(dsn, tmp_path), [key.public_key()])
    assert report.entries == 3 and report.checkpoints == 1  # the one written at close


def test_tables_of_another_schema_version_are_refused(dsn: str) -> None:
    SharedQueue(dsn).close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE audit_shared_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(AuditError, match="schema version '99'"):
        SharedQueue(dsn)
