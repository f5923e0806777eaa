"""The audit log: append signed, hash-chained entries to an :class:`AuditStore`.

:meth:`AuditLog.append` is the one write path. Under a lock it reads the head, builds the next
entry (``seq`` = head + 1, ``prev`` = head hash), signs it and commits it; it returns only once
the entry is durable. Any failure raises :class:`~gateway.errors.AuditError`, and the caller
must then fail the request closed (the gateway answers 503).

The gateway calls it from its event loop through :meth:`AuditLog.append_async`
(``asyncio.to_thread``), so SQLite's fsync never blocks the loop.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.canonical import JsonValue
from gateway.audit.entry import GENESIS_HASH, build_entry, encode_entry, entry_hash, parse_entry, sign_body
from gateway.audit.store import AuditStore, Head
from gateway.errors import AuditError
from gateway.types import AuditRecord


@dataclass(frozen=True)
class AppendResult:
    """Where an appended entry landed: its ``seq`` and ``entry_hash`` (hex SHA-256 of its body)."""

    seq: int
    entry_hash: str
    request_id: str


class AuditLog:
    """A writable, signed, hash-chained audit log in one SQLite file.

    Opening creates the file and schema if needed; an unusable path raises AuditError at once,
    so the gateway fails at startup rather than on the first request.
    """

    def __init__(self, store_path: Path, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise AuditError("audit log needs an Ed25519 private key")
        self._key = private_key
        self._lock = threading.Lock()
        self._store = AuditStore.open(Path(store_path))
        self._closed = False

    @property
    def path(self) -> Path:
        return self._store.path

    def append(self, record: AuditRecord) -> AppendResult:
        """Append one entry for ``record``; durable on return. Thread-safe. Raises AuditError."""
        with self._lock:
            self._check_open()
            head = self._store.head()
            seq, prev = (1, GENESIS_HASH) if head is None else (head.seq + 1, head.entry_hash)
            body = encode_entry(build_entry(record, seq=seq, prev=prev))
            digest = entry_hash(body)
            signature = sign_body(self._key, body)
            self._store.append(seq, record.request_id, body.decode("utf-8"), digest, signature, record.phase)
            return AppendResult(seq=seq, entry_hash=digest, request_id=record.request_id)

    async def append_async(self, record: AuditRecord) -> AppendResult:
        """:meth:`append` in a worker thread, for callers on an event loop."""
        return await asyncio.to_thread(self.append, record)

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
            return parse_entry(body)
        except AuditError as exc:
            raise AuditError(f"audit entry seq {stored.seq} ({request_id!r}) is unreadable: {exc}") from exc

    def head(self) -> Head | None:
        """The last entry (``seq``, ``entry_hash``), or None when the log is empty."""
        with self._lock:
            self._check_open()
            return self._store.head()

    def _check_open(self) -> None:
        if self._closed:
            raise AuditError(f"audit log {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
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
