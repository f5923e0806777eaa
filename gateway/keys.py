"""API keys: created once, stored only as keyed hashes (HMAC-SHA256 with a server pepper).

A key looks like ``sk-llmos-<16 hex id>-<secret>``. The id is not secret: it finds the row,
then the HMAC of the whole presented key is compared in constant time. Unknown ids are
compared against a dummy hash so timing does not tell whether an id exists.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.errors import ConfigError, InvalidRequest, ServiceUnavailable
from gateway.types import ROLES, Principal

KEY_PREFIX = "sk-llmos-"
_KEY_RE = re.compile(r"^sk-llmos-([0-9a-f]{16})-([A-Za-z0-9_-]{32,64})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TENANT_RE = _NAME_RE
_ROLE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_DUMMY_HASH = "0" * 64
MAX_EXPIRY = timedelta(days=36500)
MAX_RPM = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT NOT NULL,
    rpm INTEGER,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
"""


@dataclass(frozen=True)
class KeyInfo:
    """A stored key's public facts (never the key or its hash)."""

    id: str
    name: str
    role: str
    tenant: str
    rpm: int | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None

    def status(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and datetime.fromisoformat(self.expires_at) <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(
            id=f"key:{self.id}", name=self.name, tenant=self.tenant, roles=(self.role,), auth_method="api_key"
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class ApiKeyStore:
    """SQLite-backed key store. Safe to share between the server and the CLI (separate processes)."""

    def __init__(self, db_path: Path, pepper: bytes) -> None:
        self._db_path = db_path
        self._pepper = pepper
        try:
            with self._connect() as db:
                # WAL: readers (every request's key lookup) never wait for a writer.
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"{db_path}: cannot open the API key database ({exc})") from exc

    @contextmanager
    def _connect(self, timeout: float = 10.0) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._db_path, timeout=timeout)
        try:
            db.row_factory = sqlite3.Row
            with db:
                yield db
        finally:
            db.close()

    def _hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode("utf-8"), hashlib.sha256).hexdigest()

    def create(
        self,
        name: str,
        role: str,
        tenant: str,
        *,
        rpm: int | None = None,
        expires_in: timedelta | None = None,
    ) -> tuple[str, KeyInfo]:
        """Create a key; returns the plaintext (shown once) and its stored facts."""
        if not _NAME_RE.fullmatch(name):
            raise InvalidRequest("key name must be 1-64 characters: letters, digits, '.', '_', '@', '-'")
        if not _ROLE_RE.fullmatch(role):
            raise InvalidRequest(
                f"role must be a lowercase name (built-in: {', '.join(ROLES)}; others as your policy defines)"
            )
        if not _TENANT_RE.fullmatch(tenant):
            raise InvalidRequest("tenant must be 1-64 characters: letters, digits, '.', '_', '@', '-'")
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
            raise InvalidRequest(f"expiry must be in the future and at most {MAX_EXPIRY.days} days away")
        if _KEY_ID_RE.fullmatch(name):
            raise InvalidRequest("key name must not look like a key id (16 hex digits)")
        if rpm is not None and not 1 <= rpm <= MAX_RPM:
            raise InvalidRequest(f"rpm must be between 1 and {MAX_RPM} requests per minute")
        key_id = secrets.token_hex(8)
        plaintext = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        now = _now()
        info = KeyInfo(
            id=key_id,
            name=name,
            role=role,
            tenant=tenant,
            rpm=rpm,
            created_at=now.isoformat(),
            expires_at=(now + expires_in).isoformat() if expires_in is not None else None,
            revoked_at=None,
        )
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO api_keys (id, name, key_hash, role, tenant, rpm, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key_id,
                        name,
                        self._hash(plaintext),
                        role,
                        tenant,
                        rpm,
                        info.created_at,
                        info.expires_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise InvalidRequest(f"a key named {name!r} already exists") from exc
        return plaintext, info

    def list(self) -> list[KeyInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM api_keys ORDER BY created_at, name").fetchall()
        return [_info(r) for r in rows]

    def revoke(self, name_or_id: str) -> KeyInfo:
        with self._connect() as db:
            row = db.execute("SELECT * FROM api_keys WHERE id = ?", (name_or_id,)).fetchone()
            if row is None:
                row = db.execute("SELECT * FROM api_keys WHERE name = ?", (name_or_id,)).fetchone()
            if row is None:
                raise InvalidRequest(f"no key named or with id {name_or_id!r}", code="key_not_found")
            if row["revoked_at"] is None:
                db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now().isoformat(), row["id"]))
            row = db.execute("SELECT * FROM api_keys WHERE id = ?", (row["id"],)).fetchone()
        return _info(row)

    def has_key(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone() is not None

    def authenticate(self, presented: str) -> KeyInfo | None:
        """The active key matching ``presented``, or None. Constant time in the secret part."""
        match = _KEY_RE.match(presented)
        key_id = match.group(1) if match else ""
        try:
            with self._connect(timeout=2.0) as db:
                row = db.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        except sqlite3.Error as exc:
            raise ServiceUnavailable(
                "Authentication is temporarily unavailable.", code="auth_unavailable", retry_after=1
            ) from exc
        stored = row["key_hash"] if row is not None else _DUMMY_HASH
        ok = hmac.compare_digest(stored, self._hash(presented))
        if not ok or row is None or match is None:
            return None
        info = _info(row)
        return info if info.status(_now()) == "active" else None


def _info(row: sqlite3.Row) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        tenant=row["tenant"],
        rpm=row["rpm"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
