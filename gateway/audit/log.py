"""The audit log: hash-chained entries in a Merkle tree with signed heads and checkpoints.

:meth:`AuditLog.append` (threads) and :meth:`AuditLog.append_async` (event loops) are the
write path, and they return only once the entry is durable. Appends go to one writer thread,
which takes every append waiting at that moment (up to ``max_batch``) and writes them in one
SQLite transaction, one fsync (group commit). For each entry it builds the body (``seq`` =
head + 1, ``prev`` = head hash) and stores it with its Merkle leaf and the tree nodes it
completes (``store.py``). Each transaction also stores the *signed head*: a checkpoint of the
whole tree as it stands after the transaction, signed once for the batch, which replaces the
previous one. So every entry is covered by a signature the moment it is durable, at one
Ed25519 signature per transaction rather than per entry. When ``checkpoint_every`` entries or
``checkpoint_interval_s`` seconds have passed, the head is also kept as a *checkpoint* (C2SP
tlog-checkpoint in a signed note, ``checkpoint.py``): those are never replaced, and are what
exports prove against and auditors retain. An entry that cannot be stored (a duplicate request
id, a bad record) fails alone; a transaction that cannot commit fails every append in it. Any
failure raises :class:`~gateway.errors.AuditError`, and the caller must fail its request closed
(503).

Backpressure: at most ``max_pending`` appends wait for the writer; more wait for room (a thread
blocks; a coroutine waits without blocking its event loop). Nothing is ever dropped: an append
once called is written even if its caller is cancelled meanwhile.

The tree's leaf for an entry is ``SHA-256(0x00 || body)`` (RFC 9162), leaf index ``seq - 1``.
The log's *origin* (the checkpoint's first line, and the signing key's name) is created with
the log and kept in it; it never changes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle
from gateway.audit.canonical import JsonValue
from gateway.audit.checkpoint import Checkpoint, segment_link, sign_checkpoint
from gateway.audit.entry import (
    GENESIS_HASH,
    PreparedEntry,
    decode_openings,
    entry_hash,
    open_sealed,
    parse_entry,
    prepare_entry,
)
from gateway.audit.handoff import Handoff, Job
from gateway.audit.note import NoteError, NoteSigner, is_valid_key_name
from gateway.audit.search import Filters, Found, search
from gateway.audit.store import HEAD_META_KEY, AuditStore, Head, StoredEntry
from gateway.errors import AuditError
from gateway.types import AuditRecord

log = logging.getLogger("llmos.gateway.audit")

DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_INTERVAL_S = 10.0
DEFAULT_MAX_PENDING = 10_000
DEFAULT_MAX_BATCH = 1024
# How long a lazy entry may wait for another append's group commit before it gets its own.
LAZY_WAIT_S = 0.25


@dataclass(frozen=True)
class AppendResult:
    """Where an appended entry landed: its ``seq`` and ``entry_hash`` (hex SHA-256 of its body)."""

    seq: int
    entry_hash: str
    request_id: str


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as stored: the tree ``size``, the signed note, when it was made."""

    size: int
    note: str
    created: str


_Answer = AppendResult | StoredCheckpoint | None
# An append carries its prepared entry to the writer, a checkpoint request None.
_Job = Job[PreparedEntry | None, _Answer]


class _Refused(Exception):
    """The store refused an entry of a group insert (its AuditError is the ``__cause__``)."""


def default_origin() -> str:
    """A new log's origin: unique, and a valid note key name (no spaces, no ``+``)."""
    return f"llmos.audit/{secrets.token_hex(8)}"


class AuditLog:
    """A writable audit log in one SQLite file; thread-safe. ``close()`` it at shutdown.

    Opening creates the file and schema if needed (an unusable path raises AuditError at once,
    so the gateway fails at startup), fills in tree nodes missing for existing entries (a log
    from before the tree), and starts the writer thread.
    """

    def __init__(
        self,
        store_path: Path,
        private_key: Ed25519PrivateKey,
        *,
        origin: str | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = DEFAULT_MAX_BATCH,
        sealed_fields: Sequence[str] = (),
        previous_segment: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise AuditError("audit log needs an Ed25519 private key")
        if checkpoint_every < 1 or checkpoint_interval_s <= 0 or max_pending < 1 or max_batch < 1:
            raise AuditError("audit log: checkpoint_every, checkpoint_interval_s, max_pending, max_batch > 0")
        self._key = private_key
        self._sealed = tuple(sealed_fields)
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._max_batch = max_batch
        self._clock = clock
        self._lock = threading.Lock()  # the store's connection: the writer and readers take turns
        self._store = AuditStore.open(Path(store_path))
        try:
            self._origin = self._load_origin(origin, previous_segment)
            self._signer = NoteSigner(self._origin, private_key)
            previous = self._store.meta("previous_segment")
            # Every checkpoint of a segment names the last checkpoint of the segment before it.
            self._extensions = () if previous is None else (segment_link(previous),)
            self._load_state()
        except BaseException:
            self._store.close()
            raise
        self.commits = 0  # transactions written (group commit: fewer than appends under load)
        self._handoff: Handoff[PreparedEntry | None, _Answer] = Handoff(max_pending, f"audit log {self.path}")
        self._writer = threading.Thread(target=self._run, name="llmos-audit-writer", daemon=True)
        self._writer.start()

    # -- opening ----------------------------------------------------------------------------

    def _load_origin(self, wanted: str | None, previous_segment: str | None) -> str:
        stored = self._store.meta("origin")
        if stored is not None:
            # A later segment of the configured log is the same log (segment.py).
            if wanted is not None and wanted != stored and not stored.startswith(f"{wanted}/segment-"):
                raise AuditError(
                    f"audit log {self.path} has origin {stored!r}; the configuration says {wanted!r}"
                    " (a log's origin never changes: start a new log file for a new origin)"
                )
            return stored
        origin = wanted or default_origin()
        if not is_valid_key_name(origin):
            raise AuditError(f"audit origin {origin!r} is not valid: no spaces, no '+', not empty")
        with self._store.transaction():
            self._store.set_meta("origin", origin)
            if previous_segment is not None:
                self._store.set_meta("previous_segment", previous_segment)
        return origin

    def _load_state(self) -> None:
        """Head, tree and last checkpoint from the store; tree nodes missing for stored entries
        (a log written before the tree existed) are computed and stored now."""
        store = self._store
        head = store.head()
        self._seq, self._prev = (0, GENESIS_HASH) if head is None else (head.seq, head.entry_hash)
        latest = store.latest_checkpoint()
        if latest is not None and latest[0] > self._seq:
            raise AuditError(
                f"audit log {self.path}: a signed checkpoint covers {latest[0]} entries but the log holds"
                f" {self._seq}: entries were removed. Run `llmos audit verify`; start a new log file"
                " (keep this one as evidence) to go on"
            )
        have = store.node_count()
        if have > self._seq:
            raise AuditError(
                f"audit log {self.path}: its Merkle tree has {have} leaves but the log holds"
                f" {self._seq} entries: entries were removed. Run `llmos audit verify`; start a new"
                " log file (keep this one as evidence) to go on"
            )
        compact = self._compact_from_store(have)
        if have < self._seq:
            with store.transaction():
                for seq in range(have + 1, self._seq + 1):
                    row = store.get_seq(seq)
                    if row is None:
                        raise AuditError(f"audit log {self.path}: entry seq {seq} is missing")
                    leaf = merkle.leaf_hash(row.body.encode("utf-8", errors="surrogateescape"))
                    store.insert_nodes(compact.append_nodes(leaf))
            log.info("audit log %s: built the Merkle tree over %d existing entries", self.path, self._seq)
        self._compact = compact
        self._checkpointed = 0 if latest is None else latest[0]
        self._checkpoint_time = self._clock()

    def _compact_from_store(self, size: int) -> merkle.CompactRange:
        """The right edge of the stored tree of ``size`` leaves: one stored node per set bit."""
        nodes: list[tuple[int, bytes]] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                value = self._store.node(level, start >> level)
                if value is None:
                    raise AuditError(
                        f"audit log {self.path}: Merkle node ({level}, {start >> level}) missing"
                    )
                nodes.append((level, value))
                start += 1 << level
        return merkle.CompactRange.from_nodes(nodes)

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def queue_depth(self) -> int:
        """Appends waiting for the writer (metrics)."""
        return self._handoff.pending

    @property
    def checkpoint_age_s(self) -> float:
        """Seconds since the last signed checkpoint was kept, or since opening (metrics)."""
        return max(0.0, self._clock() - self._checkpoint_time)

    @property
    def verifier_key(self) -> str:
        """The note verifier key string for checkpoints (``<origin>+<key id>+<public key>``)."""
        return self._signer.verifier_key_string()

    # -- writing ----------------------------------------------------------------------------

    def append(self, record: AuditRecord) -> AppendResult:
        """Append one entry for ``record``; durable on return. Thread-safe. Raises AuditError."""
        job: _Job = Job(self._prepare(record))
        self._handoff.put(job)
        assert job.future is not None
        result = job.future.result()
        if not isinstance(result, AppendResult):
            raise AuditError("audit writer answered an append with no entry")
        return result

    async def append_async(self, record: AuditRecord, *, lazy: bool = False) -> AppendResult:
        """:meth:`append` for a coroutine: waits without blocking the event loop or a thread.

        The entry is written even if the caller is cancelled while waiting. A ``lazy`` entry
        (one no response waits for, such as an explanation's commit entry) is held for up to
        ``LAZY_WAIT_S`` to ride on the next group commit instead of causing one of its own:
        under load it costs no extra sync to disk, and no request waits behind its commit."""
        loop = asyncio.get_running_loop()
        job: _Job = Job(self._prepare(record), loop, lazy=lazy)
        if not self._handoff.put(job, wait=False):
            # Overloaded: wait for room in a thread; the shield keeps the entry if we are cancelled.
            await asyncio.shield(loop.run_in_executor(None, self._handoff.put, job))
        assert job.waiter is not None
        result = await job.waiter
        if not isinstance(result, AppendResult):
            raise AuditError("audit writer answered an append with no entry")
        return result

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign a checkpoint of the tree now if it grew since the last one; the latest checkpoint
        (None for an empty log)."""
        job: _Job = Job(None)
        self._handoff.put(job)
        assert job.future is not None
        result = job.future.result()
        if result is not None and not isinstance(result, StoredCheckpoint):
            raise AuditError("audit writer answered a checkpoint request with an entry")
        return result

    def _prepare(self, record: AuditRecord) -> PreparedEntry:
        """The entry for ``record``, encoded in the caller's thread; a record that cannot be an
        entry fails here, alone."""
        try:
            return prepare_entry(record, self._sealed)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"audit record cannot be logged: {exc}") from exc

    def _run(self) -> None:
        """The writer thread: group commits until the stop marker, then a last checkpoint.

        Lazy jobs are held (up to ``LAZY_WAIT_S`` after the first of them) until an urgent
        job arrives, whose commit they join; then everything waiting is written together."""
        held: list[_Job] = []
        deadline = 0.0
        while True:
            wait = self._idle_wait()
            if held:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                first = self._handoff.get(timeout=wait)
            except queue.Empty:
                self._write(held)
                held = []
                continue
            if first is None:  # the stop marker
                break
            if first.lazy and len(held) + 1 < self._max_batch:
                if not held:
                    deadline = time.monotonic() + LAZY_WAIT_S
                held.append(first)
                if time.monotonic() >= deadline:  # lazy ones keep coming: they have waited enough
                    self._write(held)
                    held = []
                continue
            jobs, held = [*held, first], []
            while len(jobs) < self._max_batch:
                try:
                    job = self._handoff.get(timeout=0)
                except queue.Empty:
                    break
                if job is None:
                    self._write(jobs)
                    self._finish()
                    return
                jobs.append(job)
            self._write(jobs)
        if held:
            self._write(held)
        self._finish()

    def _finish(self) -> None:
        self._write([], final=True)

    def _write(self, jobs: list[_Job], *, final: bool = False) -> None:
        """One transaction: the jobs' entries, and a checkpoint when due (or asked for)."""
        wants_checkpoint = final or any(job.payload is None for job in jobs)
        if not jobs and not wants_checkpoint and not self._checkpoint_due(self._compact.size):
            return  # idle, nothing to sign
        appends = [job for job in jobs if job.payload is not None]
        try:
            with self._lock:
                try:  # the usual case: one insert of every entry and node
                    outcome = self._transaction(appends, wants_checkpoint, one_by_one=False)
                except _Refused:  # a duplicate request id among them (nothing written): each alone
                    outcome = self._transaction(appends, wants_checkpoint, one_by_one=True)
        except AuditError as exc:  # nothing was committed: every append of the batch failed
            log.error("audit write failed (%d appends refused): %s", len(jobs), exc)
            self._handoff.reply([(job, exc) for job in jobs])
            return
        except BaseException as exc:  # a bug: fail the batch closed, keep the writer alive
            log.exception("audit writer failed")
            failed = AuditError(f"audit write failed: {type(exc).__name__}")
            self._handoff.reply([(job, failed) for job in jobs])
            return
        answers, self._seq, self._prev, self._compact, latest = outcome
        self.commits += 1
        if latest is not None and latest.size > self._checkpointed:
            self._checkpointed, self._checkpoint_time = latest.size, self._clock()
        replies: list[tuple[_Job, _Answer | BaseException]] = list(answers)
        replies += [(job, latest) for job in jobs if job.payload is None]
        self._handoff.reply(replies)

    def _transaction(
        self, appends: list[_Job], wants_checkpoint: bool, *, one_by_one: bool
    ) -> tuple[
        list[tuple[_Job, AppendResult | Exception]], int, str, merkle.CompactRange, StoredCheckpoint | None
    ]:
        """Write ``appends`` after the head, the signed head, and a checkpoint when due, in one
        transaction; the answers, the new head and tree, and the latest checkpoint. All at once
        (raises _Refused, nothing written, if the store refuses one), or ``one_by_one``, each
        in a savepoint so a refused entry fails alone."""
        seq, prev, compact = self._seq, self._prev, self._compact
        latest: StoredCheckpoint | None = None
        with self._store.transaction():
            if not one_by_one:
                answers, seq, prev, compact = self._append_all(appends, seq, prev, compact)
            else:
                answers = []
                for job in appends:
                    try:
                        with self._store.savepoint():
                            more, seq, prev, compact = self._append_all([job], seq, prev, compact)
                    except (AuditError, _Refused) as exc:
                        cause = exc.__cause__ if isinstance(exc, _Refused) else exc
                        more = [(job, cause if isinstance(cause, AuditError) else AuditError(str(exc)))]
                    answers += more
            # Every transaction that adds entries signs the grown tree once: the signed head.
            head = self._sign(compact) if compact.size > self._compact.size else None
            if head is not None:
                self._store.set_meta(HEAD_META_KEY, head.note)
            if compact.size > self._checkpointed and (wants_checkpoint or self._checkpoint_due(compact.size)):
                latest = head if head is not None else self._sign(compact)
                self._store.insert_checkpoint(latest.size, latest.note, latest.created)
            elif wants_checkpoint:
                latest = self._latest_locked()
        return answers, seq, prev, compact, latest

    def _idle_wait(self) -> float:
        """How long the writer may wait for work: until the time-based checkpoint is due."""
        if self._compact.size == self._checkpointed:
            return self._interval
        return max(0.01, self._interval - (self._clock() - self._checkpoint_time))

    def _checkpoint_due(self, size: int) -> bool:
        """``checkpoint_every`` entries since the last checkpoint, or some entries and
        ``checkpoint_interval_s`` seconds."""
        pending = size - self._checkpointed
        return pending >= self._every or (
            pending > 0 and self._clock() - self._checkpoint_time >= self._interval
        )

    def _append_all(
        self, jobs: list[_Job], seq: int, prev: str, compact: merkle.CompactRange
    ) -> tuple[list[tuple[_Job, AppendResult | Exception]], int, str, merkle.CompactRange]:
        """Inside the transaction: give each entry its position after ``seq``/``prev`` and
        insert them and their tree nodes at once; the answers, the new head and the grown tree
        (``compact`` itself is not changed). If the store refuses one (a duplicate request
        id), _Refused, and the caller rolls back what this wrote."""
        compact = compact.copy()
        answers: list[tuple[_Job, AppendResult | Exception]] = []
        rows: list[tuple[int, str, str, str, str, str, str]] = []
        nodes: list[tuple[int, int, bytes]] = []
        for job in jobs:
            entry = job.payload
            assert entry is not None
            body = entry.body(seq + 1, prev)
            seq, prev = seq + 1, entry_hash(body)
            nodes += compact.append_nodes(merkle.leaf_hash(body))
            # No signature of its own: the signed head of this transaction covers the entry.
            rows.append((seq, entry.request_id, body.decode("utf-8"), prev, "", entry.phase, entry.openings))
            answers.append((job, AppendResult(seq=seq, entry_hash=prev, request_id=entry.request_id)))
        try:
            self._store.insert_entries(rows)
        except AuditError as exc:
            raise _Refused from exc
        self._store.insert_nodes(nodes)
        return answers, seq, prev, compact

    def _sign(self, compact: merkle.CompactRange) -> StoredCheckpoint:
        try:
            checkpoint = Checkpoint(self._origin, compact.size, compact.root(), self._extensions)
            note = sign_checkpoint(checkpoint, self._signer)
        except NoteError as exc:
            raise AuditError(f"cannot sign an audit checkpoint: {exc}") from exc
        created = datetime.now(UTC).isoformat(timespec="milliseconds")
        return StoredCheckpoint(compact.size, note.decode("utf-8"), created)

    # -- reading ----------------------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._lock:
            self._check_open()
            return self._latest_locked()

    def _latest_locked(self) -> StoredCheckpoint | None:
        latest = self._store.latest_checkpoint()
        return None if latest is None else StoredCheckpoint(*latest)

    def inclusion_proof(self, seq: int, size: int) -> list[bytes]:
        """The proof that entry ``seq`` is leaf ``seq - 1`` of the tree of ``size`` entries."""
        with self._lock:
            self._check_open()
            return merkle.inclusion_proof(seq - 1, size, self._subtree)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """The proof that the tree of ``new_size`` entries extends the one of ``old_size``."""
        with self._lock:
            self._check_open()
            return merkle.consistency_proof(old_size, new_size, self._subtree)

    def _subtree(self, start: int, end: int) -> bytes:
        width = end - start
        value = self._store.node(width.bit_length() - 1, start // width)
        if value is None:
            raise AuditError(f"audit log {self.path}: Merkle node for leaves [{start}, {end}) is missing")
        return value

    def stored(self, request_id: str, phase: str | None = None) -> StoredEntry | None:
        """The (first) entry for ``request_id`` exactly as stored: body, hash, signature."""
        with self._lock:
            self._check_open()
            return self._store.get(request_id, phase)

    def get(self, request_id: str, phase: str | None = None) -> dict[str, JsonValue] | None:
        """The parsed (first) entry for ``request_id``, or None. Does not check its signature."""
        with self._lock:
            self._check_open()
            stored = self._store.get(request_id, phase)
        if stored is None:
            return None
        if not isinstance(stored.body, str):
            raise AuditError(f"audit entry seq {stored.seq} ({request_id!r}) has a non-text body")
        body = stored.body.encode("utf-8", errors="surrogateescape")
        try:
            return open_sealed(parse_entry(body), decode_openings(stored.openings))
        except AuditError as exc:
            raise AuditError(f"audit entry seq {stored.seq} ({request_id!r}) is unreadable: {exc}") from exc

    def unexplained(
        self, after_seq: int, upto_seq: int, limit: int = 256
    ) -> list[tuple[int, dict[str, JsonValue]]]:
        """``(seq, entry)`` of the request entries in ``(after_seq, upto_seq]`` whose explanation
        was never committed (:meth:`AuditStore.unexplained`), sealed fields opened where the
        openings are kept. One short read: call again from the last seq for more."""
        with self._lock:
            self._check_open()
            rows = self._store.unexplained(after_seq, upto_seq, limit)
        out = []
        for stored in rows:
            body = str(stored.body).encode("utf-8", errors="surrogateescape")
            try:
                out.append((stored.seq, open_sealed(parse_entry(body), decode_openings(stored.openings))))
            except AuditError as exc:
                raise AuditError(f"audit entry seq {stored.seq} is unreadable: {exc}") from exc
        return out

    def search(self, filters: Filters, *, before_seq: int | None = None, limit: int = 50) -> Found:
        """Request outcomes matching ``filters``, newest first (``search.py``)."""

        def page(before: int, n: int) -> list[StoredEntry]:
            with self._lock:
                self._check_open()
                return self._store.outcomes_before(before, n)

        head = self.head()
        return search(page, 0 if head is None else head.seq, filters, before_seq=before_seq, limit=limit)

    def head(self) -> Head | None:
        """The last entry (``seq``, ``entry_hash``), or None when the log is empty."""
        with self._lock:
            self._check_open()
            return self._store.head()

    def _check_open(self) -> None:
        if self._handoff.closed:
            raise AuditError(f"audit log {self.path} is closed")

    def close(self) -> None:
        """Write what is queued and a last checkpoint, stop the writer, close the file."""
        if not self._handoff.close():  # every job accepted before it is written first
            return
        self._writer.join()
        with self._lock:
            self._store.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
