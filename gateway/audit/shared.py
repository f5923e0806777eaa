"""The shared audit log's PostgreSQL tables, durable appends from every gateway replica, and
the lease that makes one of them the integrator (docs/deploy.md).

Tables: ``audit_shared`` (one row per entry: the prepared parts from the appending replica;
``seq``, ``entry_hash`` and the final ``body`` once integrated), ``audit_shared_nodes`` (the
Merkle tree), ``audit_shared_checkpoints`` (signed checkpoints, never replaced) and
``audit_shared_meta`` (the log's origin and its signed head), the same content as the SQLite
log's tables (``store.py``), so ``llmos audit pull`` copies one into the other.

Design (the integrator is ``integrator.py``, the replica's log ``sharedlog.py``):

- Every replica **appends** a prepared entry (``gateway.audit.entry.PreparedEntry``: the
  canonical body but for ``seq`` and ``prev``) as one row of ``audit_shared``, committed with
  ``synchronous_commit = on`` before the append returns: the entry is durable in PostgreSQL
  before the request's response completes. ``(request_id, phase)`` is unique, so a duplicate is
  refused at append time, as the SQLite log refuses it.
- Exactly one replica at a time **integrates**: it holds a session-level advisory lock
  (:class:`IntegratorLease`) and, in one transaction per batch, gives the oldest pending rows
  their ``seq`` and ``prev``, extends the Merkle tree and signs the head. PostgreSQL releases
  the lock when the holder's session ends, however it ends; another replica then takes it
  and continues from the last committed head: a batch is committed whole or not at all, so
  there is no gap and no fork.
- Rows are integrated in the order of their ids (append order). An id committed late is
  integrated in a later batch: the log's order is the order of integration.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from gateway.audit.entry import PreparedEntry
from gateway.errors import AuditError

LEASE_KEY = 0x6C6C6D6F_7331  # "llmos1": the advisory lock that names the integrator
SCHEMA_KEY = 0x6C6C6D6F_7330  # held while a replica creates the tables

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_shared (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    phase       text NOT NULL,
    body_before bytea NOT NULL,
    body_between bytea NOT NULL,
    body_after  bytea NOT NULL,
    openings    text NOT NULL,
    appended_at timestamptz NOT NULL DEFAULT now(),
    seq         bigint UNIQUE,
    entry_hash  text,
    body        bytea,
    rejected    text,  -- why the integrator set this row aside (it is not an entry of the log)
    UNIQUE (request_id, phase),
    CHECK ((seq IS NULL) = (entry_hash IS NULL) AND (seq IS NULL) = (body IS NULL)),
    CHECK (seq IS NULL OR rejected IS NULL)
);
CREATE INDEX IF NOT EXISTS audit_shared_pending ON audit_shared (id) WHERE seq IS NULL AND rejected IS NULL;
CREATE TABLE IF NOT EXISTS audit_shared_nodes (
    level integer NOT NULL,
    idx   bigint NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS audit_shared_checkpoints (
    size    bigint PRIMARY KEY,
    note    text NOT NULL,
    created text NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_shared_meta (key text PRIMARY KEY, value text NOT NULL);
"""
TABLES = ("audit_shared", "audit_shared_nodes", "audit_shared_checkpoints", "audit_shared_meta")
SCHEMA_VERSION = "1"  # audit_shared_meta 'schema'

# Every session: bounded connects, dead peers noticed in seconds (keepalives, TCP user timeout),
# no statement or lock wait longer than a request should wait, durable commits.
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": "-c statement_timeout=10000 -c lock_timeout=5000 -c synchronous_commit=on",
}
# The integrator's session: PostgreSQL ends it (and so frees the lease) when its holder has sent
# nothing for this long, e.g. a frozen process whose kernel still answers keepalives.
LEASE_IDLE_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Pending:
    """An appended entry not yet integrated: its row id and the prepared entry."""

    id: int
    entry: PreparedEntry


def connect(dsn: str, **options: Any) -> Any:
    import psycopg  # only where a shared log is configured

    try:
        return psycopg.connect(dsn, **{**CONNECT_OPTIONS, **options})
    except psycopg.Error as exc:
        # The DSN may hold a password: never in the message.
        raise AuditError(f"cannot connect to the shared audit database ({type(exc).__name__})") from exc


def ensure_schema(conn: Any) -> None:
    """Create the tables if they are missing (replicas starting together: one creates them);
    AuditError if they hold another schema version. Run once per process, not per session:
    creating (even ``IF NOT EXISTS``) locks the tables against appends."""
    import psycopg

    try:
        if conn.execute("SELECT to_regclass('audit_shared_meta')").fetchone()[0] is None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_KEY,))
                conn.execute(SCHEMA)
                conn.execute(
                    "INSERT INTO audit_shared_meta (key, value) VALUES ('schema', %s) ON CONFLICT DO NOTHING",
                    (SCHEMA_VERSION,),
                )
        row = conn.execute("SELECT value FROM audit_shared_meta WHERE key = 'schema'").fetchone()
    except psycopg.Error as exc:
        raise AuditError(f"cannot create the shared audit tables ({type(exc).__name__}: {exc})") from exc
    if row is None or row[0] != SCHEMA_VERSION:
        found = "none" if row is None else repr(row[0])
        raise AuditError(
            f"the shared audit tables have schema version {found}; this llmos writes {SCHEMA_VERSION!r}"
        )


class SharedQueue:
    """Appends of one gateway replica (thread-safe; one connection, appends serialised)."""

    def __init__(self, dsn: str, *, create: bool = True) -> None:
        """``create``: make sure the tables exist first (once per process is enough)."""
        self._conn = connect(dsn, autocommit=True)
        self._lock = threading.Lock()
        if create:
            try:
                ensure_schema(self._conn)
            except AuditError:
                self._conn.close()
                raise

    def append(self, entry: PreparedEntry) -> int:
        """Store ``entry``; durable on return. Its row id. AuditError on a duplicate
        ``(request_id, phase)`` or a database failure (nothing stored)."""
        import psycopg

        with self._lock:
            try:
                row = self._conn.execute(
                    "INSERT INTO audit_shared"
                    " (request_id, phase, body_before, body_between, body_after, openings)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (entry.request_id, entry.phase, entry.before, entry.between, entry.after, entry.openings),
                ).fetchone()
            except psycopg.errors.UniqueViolation as exc:
                raise AuditError(
                    f"audit entry for request {entry.request_id} ({entry.phase}) already exists"
                ) from exc
            except psycopg.Error as exc:
                raise AuditError(f"shared audit append failed ({type(exc).__name__})") from exc
        return int(row[0])

    @property
    def broken(self) -> bool:
        """The session is gone (closed, or its connection failed): open a new one."""
        return bool(self._conn.closed or self._conn.broken)

    def pending(self, limit: int = 1024) -> list[Pending]:
        """The oldest entries not yet integrated, in append order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, request_id, phase, body_before, body_between, body_after, openings"
                " FROM audit_shared WHERE seq IS NULL AND rejected IS NULL ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            Pending(r[0], PreparedEntry(r[1], r[2], bytes(r[3]), bytes(r[4]), bytes(r[5]), r[6]))
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def integrator_name() -> str:
    """``llmos-integrator <host> <pid>``: the lease session's application_name."""
    return f"llmos-integrator {socket.gethostname()[:32]} {os.getpid()}"


class IntegratorLease:
    """Who integrates: the holder of a session-level advisory lock, on a connection of its own.

    PostgreSQL drops the lock when that session ends (the process died, the connection was
    cut, the backend was terminated), and :meth:`try_acquire` on another replica then gets it.
    :meth:`held` asks the database, so a holder whose session was lost learns it before it
    writes (and must stop integrating)."""

    def __init__(
        self, dsn: str, key: int = LEASE_KEY, *, idle_timeout_ms: int = LEASE_IDLE_TIMEOUT_MS
    ) -> None:
        self._dsn = dsn
        self._key = key
        self._idle_timeout_ms = idle_timeout_ms
        self._conn: Any = None

    def try_acquire(self) -> bool:
        """Hold the lease, or learn that another session does (AuditError: no database). The
        session is kept either way, so retrying costs one statement, not a connection."""
        import psycopg

        if self.held():
            return True
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            # Named, so that an operator (and the tests) can see which replica integrates:
            # SELECT application_name FROM pg_stat_activity JOIN pg_locks USING (pid) ...
            self._conn = connect(
                self._dsn,
                autocommit=True,
                application_name=integrator_name(),
                options=CONNECT_OPTIONS["options"]
                + f" -c idle_session_timeout={self._idle_timeout_ms}"
                + f" -c idle_in_transaction_session_timeout={self._idle_timeout_ms}",
            )
        try:
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0]
        except psycopg.Error as exc:
            self._drop()
            raise AuditError(f"cannot ask for the integrator lease ({type(exc).__name__})") from exc
        return bool(got)

    def held(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        import psycopg

        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND objid = (%s::bigint & 4294967295)::oid",
                (self._key,),
            ).fetchone()
        except psycopg.Error:
            self._drop()
            return False
        return bool(row[0])

    def release(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    @property
    def connection(self) -> Any:
        """The holder's session (autocommit; ``transaction()`` blocks on it are the holder's
        writes, and end with the session), or None."""
        return None if self._conn is None or self._conn.closed else self._conn

    @property
    def backend_pid(self) -> int | None:
        """The holder's database session (for tests that kill it)."""
        return None if self._conn is None or self._conn.closed else int(self._conn.info.backend_pid)
