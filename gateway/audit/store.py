"""The audit store: entries in one SQLite file, append-only by convention.

Table ``audit_entries(seq, request_id, body, entry_hash, signature, phase)``, plus the Merkle
tree's nodes, the signed checkpoints and a little metadata (the log's origin, its signed head);
the schema version is ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). Writers use WAL with
``synchronous=FULL``, so an append has reached the disk when :meth:`AuditStore.append` returns.
The store knows nothing about hashing or signing (that is ``entry.py``); it only keeps rows in
``seq`` order.

An :class:`AuditStore` is not thread-safe by itself: ``AuditLog`` serialises access with a lock.
Every ``sqlite3.Error`` leaves this module as :class:`~gateway.errors.AuditError`.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway.errors import AuditError

# 2: phase, UNIQUE (request_id, phase); 3: Merkle nodes, checkpoints, meta; 4: openings;
# 5: entries may be unsigned (signature ''), covered by the signed head kept in audit_meta
SCHEMA_VERSION = 5

_ENTRIES = """
CREATE TABLE IF NOT EXISTS audit_entries (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    body TEXT NOT NULL,
    entry_hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT 'complete',
    openings TEXT NOT NULL DEFAULT '',
    UNIQUE (request_id, phase)
)
"""
# The Merkle tree over the entries (leaf index = seq - 1), as the roots of its aligned perfect
# subtrees: level L, index i covers leaves [i * 2**L, (i + 1) * 2**L). A cache for proofs:
# verification recomputes the tree from the bodies.
_NODES = """
CREATE TABLE IF NOT EXISTS audit_nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID
"""
# Signed checkpoints (C2SP tlog-checkpoint in a signed note) of the tree at ``size`` entries.
_CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    created TEXT NOT NULL
)
"""
_COLUMNS = "seq, request_id, body, entry_hash, signature, phase, openings"
_META = "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCHEMA = (_ENTRIES, _NODES, _CHECKPOINTS, _META)

BUSY_TIMEOUT_MS = 5000
HEAD_META_KEY = "head"  # audit_meta: the signed head, a checkpoint of the whole log (``log.py``)


def _decode_text(raw: bytes) -> str:
    # Invalid UTF-8 (only a tampered file has it) round-trips through surrogateescape, so a
    # verifier hashes exactly the stored bytes instead of failing to read the row.
    return raw.decode("utf-8", errors="surrogateescape")


def _insert_many(conn: sqlite3.Connection, insert: str, width: int, rows: Sequence[tuple[Any, ...]]) -> None:
    """``insert`` (``INSERT INTO t (columns)``) of ``rows`` as multi-row ``VALUES`` statements
    of power-of-two sizes up to :data:`_ROWS_PER_STATEMENT`, so a few statements (each stepped
    once, and cached by its text) carry a whole group commit instead of one per row: the writer
    gives up the GIL once per statement rather than once per row."""
    start = 0
    while start < len(rows):
        size = min(_ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        values = ",".join(["(" + ",".join("?" * width) + ")"] * size)
        conn.execute(f"{insert} VALUES {values}", [value for row in chunk for value in row])
        start += size


_ROWS_PER_STATEMENT = 2048  # 7 columns: 14336 parameters, within SQLite's 32766


@dataclass(frozen=True)
class StoredEntry:
    """One row as stored; ``body`` is the canonical JSON text, ``signature`` base64 (empty for
    entries covered by a signed head instead, as the log writes them now).

    Values are whatever the file holds (a tampered file may hold other types), so readers
    that must not trust the file check them.
    """

    seq: int
    request_id: str
    body: str
    entry_hash: str
    signature: str
    phase: str = "complete"
    openings: str = ""  # sealed fields' values and salts (canonical JSON), outside the signed body


@dataclass(frozen=True)
class Head:
    """The last entry: its ``seq`` and ``entry_hash``."""

    seq: int
    entry_hash: str


class AuditStore:
    """An open audit SQLite file. Use :meth:`open` to write, :meth:`open_readonly` to verify."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._conn = connection

    @classmethod
    def open(cls, path: Path) -> AuditStore:
        """Open (creating if needed) a writable store with WAL and ``synchronous=FULL``."""
        path = Path(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit store {path}: {exc}") from exc
        conn.text_factory = _decode_text
        store = cls(path, conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise AuditError(f"audit store {path}: cannot enable WAL journal mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = store._user_version()
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version in (2, 3, 4):  # the entries stay as they are; the log fills the new tables
                    for statement in _SCHEMA[1:]:
                        conn.execute(statement)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(audit_entries)")}
                    if "openings" not in columns:
                        conn.execute("ALTER TABLE audit_entries ADD COLUMN openings TEXT NOT NULL DEFAULT ''")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            store._check_version()
        except sqlite3.Error as exc:
            store.close()
            raise AuditError(f"cannot open audit store {path}: {exc}") from exc
        except AuditError:
            store.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> AuditStore:
        """Open an existing store read-only (``mode=ro``): nothing in the file is changed."""
        path = Path(path)
        if not path.is_file():
            raise AuditError(f"audit store {path} does not exist or is not a file")
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit store {path} read-only: {exc}") from exc
        conn.text_factory = _decode_text
        store = cls(path, conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            store._check_version()
        except sqlite3.Error as exc:
            store.close()
            raise AuditError(f"cannot read audit store {path}: {exc}") from exc
        except AuditError:
            store.close()
            raise
        return store

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the file (one WAL snapshot), though a writer goes on."""
        try:
            self._conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def _user_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _check_version(self) -> None:
        version = self._user_version()
        if version != SCHEMA_VERSION:
            raise AuditError(
                f"audit store {self.path} has schema version {version}, this llmos reads "
                f"version {SCHEMA_VERSION}" + (" (not an audit store?)" if version == 0 else "")
            )

    def head(self) -> Head | None:
        """The last entry, or None when the store is empty."""
        try:
            row = self._conn.execute(
                "SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else Head(seq=row[0], entry_hash=row[1])

    def append(
        self, seq: int, request_id: str, body: str, entry_hash: str, signature: str, phase: str = "complete"
    ) -> None:
        """Insert one entry in its own transaction; ``seq`` must follow the current head.

        Returns once the transaction is committed (durable under ``synchronous=FULL``).
        """
        with self.transaction():
            row = self._conn.execute("SELECT MAX(seq) FROM audit_entries").fetchone()
            last = 0 if row is None or row[0] is None else int(row[0])
            if seq != last + 1:
                raise AuditError(
                    f"audit store {self.path}: cannot append seq {seq} after seq {last} "
                    "(another writer is appending to this file?)"
                )
            self.insert_entries([(seq, request_id, body, entry_hash, signature, phase, "")])

    # -- group commit: several entries, their tree nodes and a checkpoint in one transaction ----

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (durable on exit), rolled back on any error."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditError(f"cannot write audit store {self.path}: {exc}") from exc

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside :meth:`transaction`: undo only this block's writes if it raises."""
        conn = self._conn
        conn.execute("SAVEPOINT entry")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO entry")
            conn.execute("RELEASE entry")
            raise
        conn.execute("RELEASE entry")

    def insert_entries(self, rows: Iterable[tuple[int, str, str, str, str, str, str]]) -> None:
        """Inside :meth:`transaction`: ``(seq, request_id, body, entry_hash, signature, phase,
        openings)`` rows in one statement. AuditError if one is a duplicate (nothing is kept)."""
        try:
            _insert_many(
                self._conn,
                "INSERT INTO audit_entries (seq, request_id, body, entry_hash, signature, phase, openings)",
                7,
                list(rows),
            )
        except sqlite3.IntegrityError as exc:
            raise AuditError(
                f"audit store {self.path}: cannot append: {exc} (request id already logged?)"
            ) from exc

    def insert_nodes(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Inside :meth:`transaction`: ``(level, index, hash)`` tree nodes."""
        _insert_many(self._conn, "INSERT OR REPLACE INTO audit_nodes (level, idx, hash)", 3, list(nodes))

    def insert_checkpoint(self, size: int, note: str, created: str) -> None:
        """Inside :meth:`transaction`."""
        self._conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (size, note, created) VALUES (?, ?, ?)",
            (size, note, created),
        )

    def node(self, level: int, index: int) -> bytes | None:
        try:
            row = self._conn.execute(
                "SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else bytes(row[0])

    def node_count(self) -> int:
        """How many leaves (level-0 nodes) the stored tree has."""
        try:
            row = self._conn.execute("SELECT COUNT(*) FROM audit_nodes WHERE level = 0").fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return int(row[0])

    def checkpoints(self) -> list[tuple[int, str, str]]:
        """Every stored checkpoint as ``(size, note, created)``, by size."""
        try:
            rows = self._conn.execute(
                "SELECT size, note, created FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return [(row[0], row[1], row[2]) for row in rows]

    def latest_checkpoint(self) -> tuple[int, str, str] | None:
        try:
            row = self._conn.execute(
                "SELECT size, note, created FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else (row[0], row[1], row[2])

    def meta(self, key: str) -> str | None:
        try:
            row = self._conn.execute("SELECT value FROM audit_meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        try:
            self._conn.execute("INSERT OR REPLACE INTO audit_meta (key, value) VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            raise AuditError(f"cannot write audit store {self.path}: {exc}") from exc

    def get_seq(self, seq: int) -> StoredEntry | None:
        try:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM audit_entries WHERE seq = ?",  # noqa: S608 (constant)
                (seq,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else StoredEntry(*row)

    def iter_leaves(self) -> Iterator[tuple[int, bytes]]:
        """The stored tree's leaves as ``(index, hash)``, by index (index = seq - 1)."""
        try:
            cursor = self._conn.execute("SELECT idx, hash FROM audit_nodes WHERE level = 0 ORDER BY idx")
            for index, value in cursor:
                yield index, bytes(value) if isinstance(value, bytes | memoryview) else value
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc

    def iter_entries(self) -> Iterator[StoredEntry]:
        """All entries in ``seq`` order (a snapshot: one read transaction)."""
        try:
            cursor = self._conn.execute(f"SELECT {_COLUMNS} FROM audit_entries ORDER BY seq")  # noqa: S608
            for row in cursor:
                yield StoredEntry(*row)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc

    def unexplained(self, after_seq: int, upto_seq: int, limit: int) -> list[StoredEntry]:
        """Request entries with ``after_seq < seq <= upto_seq`` (at most ``limit``, by seq) that
        end their request (``complete``, ``stream_end``, or a ``stream_start`` never ended) and
        whose request has no ``explanation`` entry: those whose explanation record was never
        committed (``gateway.explanations``)."""
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM audit_entries a"  # noqa: S608 (a constant column list)
                " WHERE seq > ? AND seq <= ? AND phase IN ('complete', 'stream_start', 'stream_end')"
                " AND NOT EXISTS (SELECT 1 FROM audit_entries b"
                "  WHERE b.request_id = a.request_id AND b.phase = 'explanation')"
                " AND NOT (phase = 'stream_start' AND EXISTS (SELECT 1 FROM audit_entries c"
                "  WHERE c.request_id = a.request_id AND c.phase = 'stream_end'))"
                " ORDER BY seq LIMIT ?",
                (after_seq, upto_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return [StoredEntry(*row) for row in rows]

    def outcomes_before(self, before_seq: int, limit: int) -> list[StoredEntry]:
        """Up to ``limit`` request outcomes (``complete`` and ``stream_end`` entries) with
        ``seq < before_seq``, newest first."""
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM audit_entries"  # noqa: S608 (a constant column list)
                " WHERE seq < ? AND phase IN ('complete', 'stream_end') ORDER BY seq DESC LIMIT ?",
                (before_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return [StoredEntry(*row) for row in rows]

    def get(self, request_id: str, phase: str | None = None) -> StoredEntry | None:
        """The first entry for ``request_id`` (of ``phase``, when given), or None."""
        try:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM audit_entries"  # noqa: S608 (a constant column list)
                " WHERE request_id = ? AND (? IS NULL OR phase = ?) ORDER BY seq LIMIT 1",
                (request_id, phase, phase),
            ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read audit store {self.path}: {exc}") from exc
        return None if row is None else StoredEntry(*row)

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot close audit store {self.path}: {exc}") from exc

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
