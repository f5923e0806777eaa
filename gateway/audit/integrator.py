"""The shared audit log's integrator: gives appended entries their place in the one log.

One gateway replica at a time holds the :class:`~gateway.audit.shared.IntegratorLease` (a
PostgreSQL session advisory lock). On that same session, in one transaction per batch, it

1. checks that its session still holds the lease and that the log's head is the one it
   last wrote or read (the ``head_seq`` meta row, locked ``FOR UPDATE``), else it reloads;
2. takes the oldest not yet integrated rows in id order (append order);
3. gives each its ``seq`` (head + 1) and ``prev`` (the head's hash), stores the final body and
   its hash, and the Merkle nodes the new leaves complete (RFC 9162, as ``log.py`` does);
4. signs the grown tree once (the *signed head*, replacing the previous one) and keeps it
   as a checkpoint too when ``checkpoint_every`` entries or ``checkpoint_interval_s`` seconds
   have passed; then commits (``synchronous_commit = on``).

A batch is committed whole or not at all. If the integrator dies (process killed, connection
cut), PostgreSQL rolls back its open batch and drops the lock with the session; the next
holder reads the committed head and tree and continues from there: no gap, no fork. Because
the batch runs on the lease's own session, a holder that lost its session cannot commit
anything; ``seq`` is UNIQUE and rows are updated only ``WHERE seq IS NULL``, so even a second
writer could not fork the log, only fail.

Every replica signs with the same key (the log's one signing key, from the Secret) under the
same origin, so checkpoints made by different integrators verify as one log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.entry import GENESIS_HASH, PreparedEntry, entry_hash, parse_entry
from gateway.audit.log import DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL_S, default_origin
from gateway.audit.note import NoteError, NoteSigner, is_valid_key_name
from gateway.audit.shared import LEASE_KEY, IntegratorLease, ensure_schema
from gateway.audit.store import HEAD_META_KEY
from gateway.errors import AuditError

log = logging.getLogger("llmos.gateway.audit")

DEFAULT_BATCH = 1024
HEAD_SEQ_KEY = "head_seq"  # audit_shared_meta: the seq the signed head covers (the CAS row)
ORIGIN_KEY = "origin"


@dataclass(frozen=True)
class _State:
    seq: int
    prev: str
    compact: merkle.CompactRange
    checkpointed: int  # size of the latest stored checkpoint


def _age_s(created: str | None) -> float:
    """Seconds since a checkpoint's ``created`` time (0 for none, or one from the future), so
    that the time-based checkpoint keeps its rhythm across a change of integrator."""
    if created is None:
        return 0.0
    try:
        then = datetime.fromisoformat(created)
    except ValueError:
        return 0.0
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


class Integrator:
    """Integrates pending rows while holding the lease. Not thread-safe: one thread drives it
    (:class:`IntegratorThread`), or a test calls :meth:`step` directly."""

    def __init__(
        self,
        dsn: str,
        private_key: Ed25519PrivateKey,
        *,
        origin: str | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        batch: int = DEFAULT_BATCH,
        clock: Callable[[], float] = time.monotonic,
        lease: IntegratorLease | None = None,
    ) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise AuditError("the shared audit log needs an Ed25519 private key")
        if checkpoint_every < 1 or checkpoint_interval_s <= 0 or batch < 1:
            raise AuditError(
                "shared audit log: checkpoint_every, checkpoint_interval_s and batch must be > 0"
            )
        if origin is not None and not is_valid_key_name(origin):
            raise AuditError(f"audit origin {origin!r} is not valid: no spaces, no '+', not empty")
        self._key = private_key
        self._wanted_origin = origin
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._batch = batch
        self._clock = clock
        self.lease = lease or IntegratorLease(dsn)
        self._state: _State | None = None
        self._signer: NoteSigner | None = None
        self._origin = ""
        self._checkpoint_time = clock()
        self.integrated = 0  # entries this process integrated (for tests and metrics)

    @property
    def holds_lease(self) -> bool:
        """As of the last step (the database is asked at each step, not here)."""
        return self._state is not None

    def step(self) -> int:
        """Take or keep the lease and integrate one batch; how many entries it integrated (0:
        nothing pending, or another replica holds the lease). AuditError when the database
        fails: the lease is then dropped, and the next step starts over."""
        import psycopg

        try:
            pending = True
            if self._state is not None:
                held, pending = self._look()
                if not held:
                    log.warning("audit integrator: this replica lost the lease")
                    self._state = None
            if self._state is None:
                if not self.lease.try_acquire():
                    return 0
                self._state = self._load()
                log.info(
                    "audit integrator: this replica integrates the shared log from seq %d", self._state.seq
                )
            state = self._state
            if not pending and not self._checkpoint_due(state.compact.size, state.checkpointed):
                return 0  # idle: no transaction, no transaction id, no commit
            return self._integrate()
        except psycopg.Error as exc:
            self._lose(f"{type(exc).__name__}: {exc}")
            raise AuditError(f"shared audit integration failed ({type(exc).__name__})") from exc
        except AuditError as exc:
            self._lose(str(exc))
            raise

    def final_checkpoint(self) -> None:
        """At shutdown, while still holding the lease: keep the head as a checkpoint if entries
        came after the last one (as the SQLite log does when it closes)."""
        import psycopg

        state = self._state
        if state is None or state.compact.size == state.checkpointed:
            return
        try:
            if self.lease.held():
                self._integrate(force_checkpoint=True)
        except (psycopg.Error, AuditError) as exc:
            log.warning("audit integrator: no final checkpoint (%s)", type(exc).__name__)

    def release(self) -> None:
        self._state = None
        self.lease.release()

    def _look(self) -> tuple[bool, bool]:
        """Whether this session still holds the lease, and whether rows wait: one read, so an
        idle integrator writes nothing."""
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid() AND objid = (%s::bigint & 4294967295)::oid),"
            " EXISTS (SELECT 1 FROM audit_shared WHERE seq IS NULL AND rejected IS NULL)",
            (LEASE_KEY,),
        ).fetchone()
        return bool(row[0]), bool(row[1])

    def _lose(self, why: str) -> None:
        log.error("audit integrator: gave up the lease: %s", why)
        self.release()

    @property
    def _conn(self) -> Any:
        conn = self.lease.connection
        if conn is None:
            raise AuditError("the integrator lease has no session")
        return conn

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> _State:
        """The committed head, tree and latest checkpoint; creates the origin on a new log."""
        conn = self._conn
        ensure_schema(conn)
        with conn.transaction():
            conn.execute(
                "INSERT INTO audit_shared_meta (key, value) VALUES (%s, %s), (%s, '0')"
                " ON CONFLICT DO NOTHING",
                (ORIGIN_KEY, self._wanted_origin or default_origin(), HEAD_SEQ_KEY),
            )
            origin = self._meta(ORIGIN_KEY)
            if origin is None or (self._wanted_origin is not None and origin != self._wanted_origin):
                raise AuditError(
                    f"the shared audit log has origin {origin!r}; the configuration says"
                    f" {self._wanted_origin!r} (a log's origin never changes)"
                )
            head = conn.execute(
                "SELECT seq, entry_hash FROM audit_shared WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))
            if self._meta(HEAD_SEQ_KEY) != str(seq):
                raise AuditError(
                    f"the shared audit log's signed head does not cover its last entry (seq {seq}):"
                    " entries were added or removed outside the integrator. Run `llmos audit verify`"
                )
            count = conn.execute("SELECT count(*) FROM audit_shared WHERE seq IS NOT NULL").fetchone()[0]
            if count != seq:
                raise AuditError(f"the shared audit log holds {count} entries up to seq {seq}: a gap")
            leaves = conn.execute("SELECT count(*) FROM audit_shared_nodes WHERE level = 0").fetchone()[0]
            if leaves != seq:
                raise AuditError(f"the shared audit log's Merkle tree has {leaves} leaves for {seq} entries")
            compact = self._compact(seq)
            latest = conn.execute(
                "SELECT size, created FROM audit_shared_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        if latest is not None and int(latest[0]) > seq:
            raise AuditError(
                f"a signed checkpoint covers {latest[0]} entries but the shared log holds {seq}:"
                " entries were removed. Run `llmos audit verify`"
            )
        self._signer = NoteSigner(origin, self._key)
        self._origin = origin
        self._checkpoint_time = self._clock() - _age_s(None if latest is None else str(latest[1]))
        return _State(seq, prev, compact, 0 if latest is None else int(latest[0]))

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM audit_shared_meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _compact(self, size: int) -> merkle.CompactRange:
        nodes: list[tuple[int, bytes]] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                row = self._conn.execute(
                    "SELECT value FROM audit_shared_nodes WHERE level = %s AND idx = %s",
                    (level, start >> level),
                ).fetchone()
                if row is None:
                    raise AuditError(
                        f"the shared audit log's Merkle node ({level}, {start >> level}) is missing"
                    )
                nodes.append((level, bytes(row[0])))
                start += 1 << level
        return merkle.CompactRange.from_nodes(nodes)

    # -- integrating ------------------------------------------------------------------------

    def _integrate(self, *, force_checkpoint: bool = False) -> int:
        state = self._state
        assert state is not None
        conn = self._conn
        with conn.transaction():
            locked = conn.execute(
                "SELECT value FROM audit_shared_meta WHERE key = %s FOR UPDATE", (HEAD_SEQ_KEY,)
            ).fetchone()
            if locked is None or locked[0] != str(state.seq) or not self.lease.held():
                raise AuditError("the shared audit log's head moved under this integrator")
            rows = conn.execute(
                "SELECT id, request_id, phase, body_before, body_between, body_after, openings"
                " FROM audit_shared WHERE seq IS NULL AND rejected IS NULL ORDER BY id LIMIT %s FOR UPDATE",
                (self._batch,),
            ).fetchall()
            due = force_checkpoint or self._checkpoint_due(state.compact.size + len(rows), state.checkpointed)
            if not rows and not due:
                return 0
            entries = [
                (int(r[0]), PreparedEntry(r[1], r[2], bytes(r[3]), bytes(r[4]), bytes(r[5]), r[6]))
                for r in rows
            ]
            seq, prev, compact, updates, nodes, rejected = self._place(entries, state)
            with conn.cursor() as cur:
                if rejected:
                    cur.executemany("UPDATE audit_shared SET rejected = %s WHERE id = %s", rejected)
                if updates:
                    cur.executemany(
                        "UPDATE audit_shared SET seq = %s, entry_hash = %s, body = %s"
                        " WHERE id = %s AND seq IS NULL",
                        updates,
                    )
                    if cur.rowcount != len(updates):  # the rows are locked: cannot happen
                        raise AuditError("shared audit rows changed under the integrator")
                if nodes:
                    cur.executemany(
                        "INSERT INTO audit_shared_nodes (level, idx, value) VALUES (%s, %s, %s)", nodes
                    )
            checkpointed = state.checkpointed
            if compact.size > state.checkpointed:
                size, note, created = self._sign(compact)
                if updates:
                    conn.execute(
                        "INSERT INTO audit_shared_meta (key, value) VALUES (%s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (HEAD_META_KEY, note),
                    )
                    conn.execute(
                        "UPDATE audit_shared_meta SET value = %s WHERE key = %s", (str(seq), HEAD_SEQ_KEY)
                    )
                if due:
                    conn.execute(
                        "INSERT INTO audit_shared_checkpoints (size, note, created) VALUES (%s, %s, %s)",
                        (size, note, created),
                    )
                    checkpointed = size
        # Committed: only now does this process believe the new head.
        self._state = _State(seq, prev, compact, checkpointed)
        if checkpointed > state.checkpointed:
            self._checkpoint_time = self._clock()
        for why, row_id in rejected:
            log.error("audit integrator: row %d set aside, not an entry: %s", row_id, why)
        self.integrated += len(updates)
        return len(updates)

    def _place(
        self, entries: Sequence[tuple[int, PreparedEntry]], state: _State
    ) -> tuple[
        int,
        str,
        merkle.CompactRange,
        list[tuple[int, str, bytes, int]],
        list[tuple[int, int, bytes]],
        list[tuple[str, int]],
    ]:
        """Each row's body at its place, checked as an entry first: a row that is not one (a
        bug, or a write that did not come from a replica) is set aside, never signed."""
        seq, prev, compact = state.seq, state.prev, state.compact.copy()
        updates: list[tuple[int, str, bytes, int]] = []
        nodes: list[tuple[int, int, bytes]] = []
        rejected: list[tuple[str, int]] = []
        for row_id, entry in entries:
            try:
                body = entry.body(seq + 1, prev)
                parsed = parse_entry(body)
                if (
                    parsed.get("request_id") != entry.request_id
                    or parsed.get("phase", "complete") != entry.phase
                ):
                    raise AuditError("its request_id or phase differs from its row's")
            except (AuditError, UnicodeDecodeError, ValueError) as exc:
                rejected.append((str(exc)[:200], row_id))
                continue
            seq, prev = seq + 1, entry_hash(body)
            nodes += compact.append_nodes(merkle.leaf_hash(body))
            updates.append((seq, prev, body, row_id))
        return seq, prev, compact, updates, nodes, rejected

    def _checkpoint_due(self, size: int, checkpointed: int) -> bool:
        pending = size - checkpointed
        return pending >= self._every or (
            pending > 0 and self._clock() - self._checkpoint_time >= self._interval
        )

    def _sign(self, compact: merkle.CompactRange) -> tuple[int, str, str]:
        assert self._signer is not None
        try:
            note = sign_checkpoint(Checkpoint(self._origin, compact.size, compact.root()), self._signer)
        except NoteError as exc:
            raise AuditError(f"cannot sign an audit checkpoint: {exc}") from exc
        return compact.size, note.decode("utf-8"), datetime.now(UTC).isoformat(timespec="milliseconds")


class IntegratorThread:
    """Runs :meth:`Integrator.step` in a daemon thread: back to back while there is work,
    ``poll_s`` apart when there is none, ``retry_s`` apart while another replica holds the
    lease or the database fails. ``stop()`` releases the lease."""

    def __init__(self, integrator: Integrator, *, poll_s: float = 0.02, retry_s: float = 1.0) -> None:
        self.integrator = integrator
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmos-audit-integrator", daemon=True)
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.integrator.step()
            except AuditError:
                self.failures += 1
                self._stop.wait(self._retry_s)
                continue
            except Exception:  # a bug: keep the thread, drop the lease, try again later
                log.exception("audit integrator failed")
                self.failures += 1
                self.integrator.release()
                self._stop.wait(self._retry_s)
                continue
            if done == 0:
                self._stop.wait(self._poll_s if self.integrator.holds_lease else self._retry_s)
        self.integrator.final_checkpoint()
        self.integrator.release()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
