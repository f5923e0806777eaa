"""gateway.audit.shared against a real PostgreSQL (tests/pgserver.py): appends from several
processes at once are all durable, in one table, duplicates refused; the integrator lease has
one holder and passes on when the holder's process is killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from gateway.audit.entry import prepare_entry
from gateway.audit.shared import IntegratorLease, SharedQueue
from gateway.errors import AuditError
from tests.pgserver import bindir

from .conftest import make_record

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL is not installed (make services)")

PREV = "0" * 64


def _append_many(dsn: str, replica: int, count: int) -> None:
    queue = SharedQueue(dsn)
    for n in range(count):
        queue.append(prepare_entry(make_record(replica * 1000 + n)))
    queue.close()


def test_appends_from_three_replicas_are_all_durable_and_intact(dsn: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    replicas = [ctx.Process(target=_append_many, args=(dsn, r, 60)) for r in range(3)]
    for p in replicas:
        p.start()
    for p in replicas:
        p.join(timeout=120)
        assert p.exitcode == 0
    queue = SharedQueue(dsn)  # a new session sees every one of them
    try:
        pending = queue.pending(limit=10_000)
    finally:
        queue.close()
    assert len(pending) == 180
    assert [p.id for p in pending] == sorted(p.id for p in pending)  # append order
    assert len({p.entry.request_id for p in pending}) == 180
    sample = next(p for p in pending if p.entry.request_id == "req-2007")
    assert sample.entry.body(1, PREV) == prepare_entry(make_record(2007)).body(1, PREV)


def test_a_duplicate_is_refused_and_the_first_kept(dsn: str) -> None:
    queue = SharedQueue(dsn)
    try:
        first = queue.append(prepare_entry(make_record(1)))
        with pytest.raises(AuditError, match="already exists"):
            queue.append(prepare_entry(make_record(1)))
        assert [p.id for p in queue.pending()] == [first]
        queue.append(prepare_entry(make_record(1, phase="stream_end")))  # another phase: fine
    finally:
        queue.close()


def test_the_lease_has_one_holder_and_passes_on_when_its_session_ends(dsn: str) -> None:
    a, b = IntegratorLease(dsn), IntegratorLease(dsn)
    try:
        assert a.try_acquire() and a.held()
        assert not b.try_acquire() and not b.held()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (a.backend_pid,))
        assert not a.held()  # the holder learns it lost the lease
        assert wait_for(b.try_acquire)
    finally:
        a.release()
        b.release()


HOLDER = """
import sys, time
from gateway.audit.shared import IntegratorLease
lease = IntegratorLease(sys.argv[1])
assert lease.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_the_lease_passes_on_when_the_holding_process_is_killed(dsn: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, dsn], stdout=subprocess.PIPE, text=True)
    other = IntegratorLease(dsn)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not other.try_acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert wait_for(other.try_acquire)  # PostgreSQL ended the dead client's session
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
        other.release()


def wait_for(condition: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
