"""The audit log of a gateway replica when the log is shared on PostgreSQL (``audit.backend:
postgres``).

:meth:`SharedAuditLog.append` prepares the entry in the caller's thread (encoding, sealing),
inserts it into ``audit_shared`` on one of ``connections`` sessions and returns once
PostgreSQL has committed it (``synchronous_commit = on``): the entry is durable before the
request's response completes, as with the SQLite log. Its place in the log (``seq``, ``prev``,
the Merkle tree, signed checkpoints) is given a moment later by whichever replica holds the
integrator lease; every replica runs an :class:`~gateway.audit.integrator.IntegratorThread`
and one of them wins (``integrator.py``).

An append that fails (the database unreachable, a duplicate request id) raises AuditError and
the request fails closed (503). A session whose connection broke is replaced at its next use.
The append is never retried: a commit whose outcome is unknown is reported as a failure.

This log keeps no Merkle tree in the gateway: the proof endpoints answer 503
(``audit_proofs_unavailable``) and explanation records are not reconciled at start-up. Use
``llmos audit pull`` and the offline tools (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.entry import PreparedEntry, prepare_entry
from gateway.audit.integrator import Integrator, IntegratorThread
from gateway.audit.log import DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL_S
from gateway.audit.shared import SharedQueue
from gateway.errors import AuditError
from gateway.types import AuditRecord

DEFAULT_CONNECTIONS = 4
# An append waits this long for a free session (all busy: the database is slow or hung), then
# fails closed rather than holding its thread, and its request, indefinitely.
SESSION_WAIT_S = 10.0


@dataclass(frozen=True)
class SharedAppend:
    """A durable shared append: its row id (its ``seq`` comes with integration)."""

    id: int
    request_id: str


class SharedAuditLog:
    """Appends to the shared log, and takes its turn as integrator. ``close()`` at shutdown."""

    def __init__(
        self,
        dsn: str,
        private_key: Ed25519PrivateKey,
        *,
        origin: str | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        sealed_fields: Sequence[str] = (),
        connections: int = DEFAULT_CONNECTIONS,
        integrate: bool = True,
        poll_s: float = 0.02,
    ) -> None:
        if connections < 1:
            raise AuditError("shared audit log: connections must be at least 1")
        self._dsn = dsn
        self._sealed = tuple(sealed_fields)
        self._sessions: queue.SimpleQueue[SharedQueue | None] = queue.SimpleQueue()
        first = SharedQueue(dsn)  # creates the tables; fails start-up if the database is unusable
        self._sessions.put(first)
        for _ in range(connections - 1):
            self._sessions.put(None)  # opened when first needed
        self._idle = threading.Condition()
        self._in_flight = 0
        self._closed = False
        self._integrator: IntegratorThread | None = None
        if integrate:
            self._integrator = IntegratorThread(
                Integrator(
                    dsn,
                    private_key,
                    origin=origin,
                    checkpoint_every=checkpoint_every,
                    checkpoint_interval_s=checkpoint_interval_s,
                ),
                poll_s=poll_s,
            )
            self._integrator.start()

    @property
    def integrator(self) -> Integrator | None:
        return None if self._integrator is None else self._integrator.integrator

    def append(self, record: AuditRecord) -> SharedAppend:
        """Append one entry; durable in PostgreSQL on return. Raises AuditError."""
        return self._append(self._prepare(record))

    async def append_async(self, record: AuditRecord, *, lazy: bool = False) -> SharedAppend:
        """:meth:`append` in a worker thread. ``lazy`` changes nothing here (each append is
        its own PostgreSQL commit, which PostgreSQL groups across sessions). The append goes
        on even if the caller is cancelled."""
        entry = self._prepare(record)
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(None, self._append, entry))

    def _prepare(self, record: AuditRecord) -> PreparedEntry:
        try:
            return prepare_entry(record, self._sealed)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"audit record cannot be logged: {exc}") from exc

    def _append(self, entry: PreparedEntry) -> SharedAppend:
        with self._idle:
            if self._closed:
                raise AuditError("the shared audit log is closed")
            self._in_flight += 1
        try:
            try:
                session = self._sessions.get(timeout=SESSION_WAIT_S)
            except queue.Empty:
                raise AuditError("the shared audit log is overloaded: no database session free") from None
            try:
                if session is None or session.broken:
                    if session is not None:
                        session.close()
                    session = None
                    session = SharedQueue(self._dsn, create=False)
                return SharedAppend(session.append(entry), entry.request_id)
            finally:
                self._sessions.put(session)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Let appends under way finish, stop integrating (a last checkpoint; the lease passes to
        another replica) and close the sessions."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
        if self._integrator is not None:
            self._integrator.stop()
        while True:
            try:
                session = self._sessions.get_nowait()
            except queue.Empty:
                break
            if session is not None:
                session.close()

    def __enter__(self) -> SharedAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
