"""The test PostgreSQL server (tests/pgserver.py) works, and gives what the shared audit log
will build on: durable commits seen by every connection, and session advisory locks that pass
to another connection when their holder's connection dies (leader election, issue 11)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.pgserver import PgServer, bindir, pg_server

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL is not installed (make services)")

LOCK = 7_110_001


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with pg_server() as server:
        yield server


def test_a_commit_is_seen_by_another_connection(pg: PgServer) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as a, psycopg.connect(pg.dsn, autocommit=True) as b:
        a.execute("CREATE TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, body text NOT NULL)")
        a.execute("INSERT INTO t (body) VALUES (%s)", ("entry",))
        row = b.execute("SELECT body FROM t ORDER BY id DESC LIMIT 1").fetchone()
        assert row == ("entry",)
        assert b.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_an_advisory_lock_has_one_holder_and_passes_on_when_it_dies(pg: PgServer) -> None:
    first = psycopg.connect(pg.dsn, autocommit=True)
    second = psycopg.connect(pg.dsn, autocommit=True)
    try:
        assert first.execute("SELECT pg_try_advisory_lock(%s)", (LOCK,)).fetchone() == (True,)
        assert second.execute("SELECT pg_try_advisory_lock(%s)", (LOCK,)).fetchone() == (False,)
        # The holder's backend is killed (a crashed integrator): its session locks go with it.
        pid = first.info.backend_pid
        assert second.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        for _ in range(100):
            if second.execute("SELECT pg_try_advisory_lock(%s)", (LOCK,)).fetchone() == (True,):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the lock never passed to the second connection")
    finally:
        first.close()
        second.close()
