from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.entry import GENESIS_HASH, entry_hash
from gateway.audit.log import AppendResult, AuditLog
from gateway.audit.store import Head
from gateway.audit.verify import verify_log
from gateway.errors import AuditError

from .conftest import KeyPair, make_record


def test_append_chains_and_get(open_log: Callable[[], AuditLog]) -> None:
    log = open_log()
    assert log.head() is None
    first = log.append(make_record(1))
    second = log.append(make_record(2, decision="deny", status=403, reasons=("policy.denied",)))
    assert (first.seq, second.seq) == (1, 2)
    assert log.head() == Head(seq=2, entry_hash=second.entry_hash)

    entry = log.get("req-0002")
    assert entry is not None
    assert entry["prev"] == first.entry_hash
    assert entry["decision"] == "deny"
    assert entry["reasons"] == ["policy.denied"]
    one = log.get("req-0001")
    assert one is not None
    assert one["prev"] == GENESIS_HASH
    assert log.get("req-9999") is None


def test_returned_hash_is_hash_of_stored_body(open_log: Callable[[], AuditLog]) -> None:
    log = open_log()
    result = log.append(make_record(1))
    stored = log._store.get("req-0001")
    assert stored is not None
    assert entry_hash(stored.body.encode()) == result.entry_hash == stored.entry_hash


def test_append_then_verify(open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair) -> None:
    log = open_log()
    results = [log.append(make_record(n)) for n in range(1, 11)]
    report = verify_log(db_path, keypair.public_key)
    assert report.entries == 10
    assert report.head_hash == results[-1].entry_hash


def test_reopen_continues_the_chain(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair
) -> None:
    log = open_log()
    log.append(make_record(1))
    log.close()
    log = open_log()
    assert log.append(make_record(2)).seq == 2
    assert verify_log(db_path, keypair.public_key).entries == 2


def test_empty_log_verifies(open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair) -> None:
    open_log().close()
    report = verify_log(db_path, keypair.public_key)
    assert (report.entries, report.head_hash) == (0, GENESIS_HASH)


def test_concurrent_appends_form_one_contiguous_chain(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair
) -> None:
    log = open_log()
    threads_n, per_thread = 8, 25
    results: list[AppendResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)
    results_lock = threading.Lock()

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            try:
                result = log.append(make_record(t * 1000 + i))
            except BaseException as exc:  # surface to the main thread
                errors.append(exc)
                return
            with results_lock:
                results.append(result)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.seq for r in results) == list(range(1, threads_n * per_thread + 1))
    report = verify_log(db_path, keypair.public_key)
    assert report.entries == threads_n * per_thread
    assert report.head_hash == max(results, key=lambda r: r.seq).entry_hash


def test_append_async(open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair) -> None:
    log = open_log()

    async def main() -> list[AppendResult]:
        return await asyncio.gather(*(log.append_async(make_record(n)) for n in range(20)))

    results = asyncio.run(main())
    assert sorted(r.seq for r in results) == list(range(1, 21))
    assert verify_log(db_path, keypair.public_key).entries == 20


def test_failed_append_raises_and_leaves_log_valid(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair
) -> None:
    log = open_log()
    log.append(make_record(1))
    with pytest.raises(AuditError, match="request id already logged"):
        log.append(make_record(1))
    with pytest.raises(AuditError, match="float"):
        log.append(make_record(2, latency_ms=1.5))
    assert log.append(make_record(3)).seq == 2
    assert verify_log(db_path, keypair.public_key).entries == 2


def test_unwritable_db_path(tmp_path: Path, keypair: KeyPair) -> None:
    with pytest.raises(AuditError, match="cannot open audit store"):
        AuditLog(tmp_path / "no-such-dir" / "audit.db", keypair.private_key)
    with pytest.raises(AuditError):
        AuditLog(tmp_path, keypair.private_key)


def test_write_failure_after_open_raises_audit_error(open_log: Callable[[], AuditLog], db_path: Path) -> None:
    log = open_log()
    log.append(make_record(1))
    # Another connection holds the write lock past the busy timeout: the append must fail closed.
    blocker = sqlite3.connect(db_path, timeout=0)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        log._store._conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(AuditError, match="cannot write audit store"):
            log.append(make_record(2))
    finally:
        blocker.rollback()
        blocker.close()
    assert log.append(make_record(2)).seq == 2


def test_closed_log_refuses(open_log: Callable[[], AuditLog]) -> None:
    log = open_log()
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(make_record(1))
