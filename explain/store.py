"""Explanation records in a SQLite file (WAL), keyed by request id. No torch here.

The gateway writes a record in two steps: when the request's outcome is known (and its audit
entry written) it puts the record with the model attribution ``pending`` (or with its final
status, when no attribution is coming: a denial, an echo model); when the worker's attribution
arrives, or is given up on, it puts the final record. The rules of :meth:`ExplanationStore.put`:

- no record for the request id yet: insert;
- a ``pending`` record: replace it, but only with a record whose evidence digest (everything
  except the model attribution) is the same: a replacement can fill in the attribution and
  nothing else (not the decision, not the owner);
- a record that is not ``pending``: refuse (ExplanationError). Final records never change.

:meth:`ExplanationStore.get` reads a record back and checks it: the stored bytes must parse as
a record, be its canonical encoding, hash to the stored digest, and agree with the owner and
status columns; anything else raises ExplanationError (altered or malformed). The owner
columns (``principal_id``, ``tenant``) are there for the caller's access check.

One connection guarded by a lock: safe to call from several threads (``asyncio.to_thread``).
The file is created readable by its owner only: records hold the tokens the model saw.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from explain.errors import ExplanationError
from explain.record import ExplanationRecord

__all__ = ["ExplanationStore", "StoredExplanation"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (
    request_id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    evidence_digest TEXT NOT NULL,
    digest TEXT NOT NULL,
    body BLOB NOT NULL
)
"""
_META = "CREATE TABLE IF NOT EXISTS explanation_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_COLUMNS = "principal_id, tenant, status, evidence_digest, digest, body"


@dataclass(frozen=True)
class StoredExplanation:
    """A record as stored: the record, its digest, and the owner columns for access checks."""

    record: ExplanationRecord
    digest: str
    evidence_digest: str
    principal_id: str
    tenant: str


class ExplanationStore:
    """Explanation records in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(_META)
        except (OSError, sqlite3.Error) as exc:
            raise ExplanationError(f"explanation store {self.path}: cannot open ({exc})") from exc

    def put(self, record: ExplanationRecord) -> StoredExplanation:
        """Insert the record, or replace the request's pending one (see the module docstring)."""
        (result,) = self.put_many([record])
        if isinstance(result, ExplanationError):
            raise result
        return result

    def put_many(self, records: list[ExplanationRecord]) -> list[StoredExplanation | ExplanationError]:
        """``put`` for each record, in one transaction (one sync to disk for all of them). A record
        refused (a final one cannot be replaced) gets its ExplanationError in the result and
        does not stop the others; a failed write raises ExplanationError for all of them."""
        prepared = [(r, r.canonical_bytes(), r.evidence_digest()) for r in records]
        results: list[StoredExplanation | ExplanationError] = []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for record, body, evidence in prepared:
                        results.append(self._put_one(record, body, evidence))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ExplanationError(f"explanation store {self.path}: write failed ({exc})") from exc
        return results

    def _put_one(
        self, record: ExplanationRecord, body: bytes, evidence: str
    ) -> StoredExplanation | ExplanationError:
        digest = hashlib.sha256(body).hexdigest()
        status = record.model_attribution.status
        row = self._db.execute(
            "SELECT status, evidence_digest FROM explanations WHERE request_id = ?", (record.request_id,)
        ).fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO explanations (request_id, created, principal_id, tenant, status,"
                " evidence_digest, digest, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.request_id,
                    record.created,
                    record.principal_id,
                    record.tenant,
                    status,
                    evidence,
                    digest,
                    body,
                ),
            )
        else:
            try:
                _check_replacement(record.request_id, row[0], row[1], evidence)
            except ExplanationError as exc:
                return exc
            self._db.execute(
                "UPDATE explanations SET status = ?, digest = ?, body = ? WHERE request_id = ?",
                (status, digest, body, record.request_id),
            )
        return StoredExplanation(record, digest, evidence, record.principal_id, record.tenant)

    def get(self, request_id: str) -> StoredExplanation | None:
        """The request's record, checked; None when there is none."""
        with self._lock:
            try:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM explanations WHERE request_id = ?",  # noqa: S608 (constant)
                    (request_id,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise ExplanationError(f"explanation store {self.path}: read failed ({exc})") from exc
        if row is None:
            return None
        principal_id, tenant, status, evidence, digest, body = row
        body = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else str(body).encode("utf-8")
        if hashlib.sha256(body).hexdigest() != digest:
            raise ExplanationError(
                f"explanation {request_id}: the stored record does not match its digest (altered)"
            )
        record = ExplanationRecord.from_json(body)
        if record.canonical_bytes() != body:  # then its digest is the stored one, too
            raise ExplanationError(
                f"explanation {request_id}: the stored record is not canonical JSON (altered)"
            )
        columns = (request_id, principal_id, tenant, status, evidence)
        actual = (
            record.request_id,
            record.principal_id,
            record.tenant,
            record.model_attribution.status,
            record.evidence_digest(),
        )
        if columns != actual:
            raise ExplanationError(
                f"explanation {request_id}: the stored columns disagree with the record (altered)"
            )
        return StoredExplanation(record, digest, evidence, principal_id, tenant)

    def request_ids(self) -> list[str]:
        """Every stored record's request id, oldest first (``llmos explain verify``)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT request_id FROM explanations ORDER BY created, rowid"
                ).fetchall()
            except sqlite3.Error as exc:
                raise ExplanationError(f"explanation store {self.path}: read failed ({exc})") from exc
        return [str(r[0]) for r in rows]

    def meta(self, key: str) -> str | None:
        """A bookkeeping value (``recovered_through``: see ``gateway.explanations``), or None."""
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM explanation_meta WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                raise ExplanationError(f"explanation store {self.path}: read failed ({exc})") from exc
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO explanation_meta (key, value) VALUES (?, ?)", (key, value)
                )
            except sqlite3.Error as exc:
                raise ExplanationError(f"explanation store {self.path}: write failed ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ExplanationStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_replacement(request_id: str, status: str, stored_evidence: str, evidence: str) -> None:
    if status != "pending":
        raise ExplanationError(f"explanation {request_id} is final ({status}); it cannot be replaced")
    if stored_evidence != evidence:
        raise ExplanationError(
            f"explanation {request_id}: a replacement may fill in the model attribution only, "
            "not change the decision, findings or owner"
        )
