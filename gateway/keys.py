"""API keys: created once, stored only as keyed hashes (HMAC-SHA256 with a server pepper).

A key looks like ``sk-llmos-<16 hex id>-<secret>``: the prefix makes a leaked key easy to
recognise (secret scanners, logs). The id is not secret: it finds the row, then the HMAC of
the whole presented key is compared in constant time. Unknown ids are compared against a
dummy hash so timing does not tell whether an id exists.

A key carries its principal (name, role, tenant), optional scopes (the models and endpoints
it may be used for; none means all), optional limits (requests and tokens per minute, a
daily token budget), an optional expiry, when it was last used (written at most once a
minute per key) and when it was revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, InvalidRequest, NotFound, ServiceUnavailable
from gateway.types import ENDPOINTS, ROLES, Principal

log = logging.getLogger("llmos.gateway")

KEY_PREFIX = "sk-llmos-"
_KEY_RE = re.compile(r"^sk-llmos-([0-9a-f]{16})-([A-Za-z0-9_-]{32,64})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TENANT_RE = _NAME_RE
_ROLE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_DUMMY_HASH = "0" * 64
MAX_EXPIRY = timedelta(days=36500)
MAX_RPM = 1_000_000_000
MAX_TOKENS_LIMIT = 10**12
MAX_SCOPE_ITEMS = 256
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key

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
# Columns added after the first release; an older database gains them when opened.
_ADDED_COLUMNS = {
    "tpm": "INTEGER",
    "daily_tokens": "INTEGER",
    "models": "TEXT",  # JSON array; NULL: every model
    "endpoints": "TEXT",  # JSON array; NULL: every endpoint
    "last_used_at": "TEXT",
}


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
    tpm: int | None = None
    daily_tokens: int | None = None
    models: tuple[str, ...] | None = None  # None: every model
    endpoints: tuple[str, ...] | None = None  # None: every endpoint
    last_used_at: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and datetime.fromisoformat(self.expires_at) <= now:
            return "expired"
        return "active"

    def allows_endpoint(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def principal(self) -> Principal:
        return Principal(
            id=f"key:{self.id}", name=self.name, tenant=self.tenant, roles=(self.role,), auth_method="api_key"
        )

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The JSON shape of ``llmos keys list --json`` and ``GET /admin/keys``."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "tenant": self.tenant,
            "status": self.status(now),
            "models": list(self.models) if self.models is not None else None,
            "endpoints": list(self.endpoints) if self.endpoints is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "daily_tokens": self.daily_tokens,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


def _limit(value: int | None, what: str, highest: int) -> int | None:
    if value is not None and (isinstance(value, bool) or not 1 <= value <= highest):
        raise InvalidRequest(f"{what} must be between 1 and {highest}", param=what)
    return value


def _scope(
    values: Iterable[str] | None, what: str, allowed: re.Pattern[str] | tuple[str, ...]
) -> tuple[str, ...] | None:
    if values is None:
        return None
    items = tuple(dict.fromkeys(values))  # keep order, drop repeats
    if not items or len(items) > MAX_SCOPE_ITEMS:
        raise InvalidRequest(
            f"{what} must list 1 to {MAX_SCOPE_ITEMS} names (leave it out for all)", param=what
        )
    for item in items:
        ok = isinstance(item, str) and (
            item in allowed if isinstance(allowed, tuple) else bool(allowed.fullmatch(item))
        )
        if not ok:
            known = f": one of {', '.join(allowed)}" if isinstance(allowed, tuple) else ""
            raise InvalidRequest(f"{what} holds an invalid name{known}", param=what)
    return items


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class ApiKeyStore:
    """SQLite-backed key store. Safe to share between the server and the CLI (separate processes)."""

    def __init__(self, db_path: Path, pepper: bytes) -> None:
        self._db_path = db_path
        self._pepper = pepper
        # Key lookups reuse one read connection per thread: opening one costs ~0.2 ms, the
        # lookup itself ~5 us. In autocommit mode each SELECT reads the latest committed state,
        # so a revocation made by the CLI or the admin API applies to the very next request.
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._touching: threading.Thread | None = None  # the last last-use write (see authenticate)
        try:
            with self._connect() as db:
                # WAL: readers (every request's key lookup) never wait for a writer.
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(_SCHEMA)
                have = {row["name"] for row in db.execute("PRAGMA table_info(api_keys)")}
                for column, kind in _ADDED_COLUMNS.items():
                    if column not in have:
                        db.execute(f"ALTER TABLE api_keys ADD COLUMN {column} {kind}")
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
        tpm: int | None = None,
        daily_tokens: int | None = None,
        models: Iterable[str] | None = None,
        endpoints: Iterable[str] | None = None,
        expires_in: timedelta | None = None,
    ) -> tuple[str, KeyInfo]:
        """Create a key; returns the plaintext (shown once) and its stored facts."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidRequest(
                "key name must be 1-64 characters: letters, digits, '.', '_', '@', '-'", param="name"
            )
        if not isinstance(role, str) or not _ROLE_RE.fullmatch(role):
            raise InvalidRequest(
                f"role must be a lowercase name (built-in: {', '.join(ROLES)};"
                " others as your policy defines)",
                param="role",
            )
        if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
            raise InvalidRequest(
                "tenant must be 1-64 characters: letters, digits, '.', '_', '@', '-'", param="tenant"
            )
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
            raise InvalidRequest(
                f"expiry must be in the future and at most {MAX_EXPIRY.days} days away",
                param="expires_in_days",
            )
        if _KEY_ID_RE.fullmatch(name):
            raise InvalidRequest("key name must not look like a key id (16 hex digits)", param="name")
        key_id = secrets.token_hex(8)
        plaintext = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
        now = _now()
        info = KeyInfo(
            id=key_id,
            name=name,
            role=role,
            tenant=tenant,
            rpm=_limit(rpm, "rpm", MAX_RPM),
            tpm=_limit(tpm, "tpm", MAX_TOKENS_LIMIT),
            daily_tokens=_limit(daily_tokens, "daily_tokens", MAX_TOKENS_LIMIT),
            models=_scope(models, "models", _MODEL_RE),
            endpoints=_scope(endpoints, "endpoints", ENDPOINTS),
            created_at=now.isoformat(),
            expires_at=(now + expires_in).isoformat() if expires_in is not None else None,
            revoked_at=None,
        )
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO api_keys (id, name, key_hash, role, tenant, rpm, tpm, daily_tokens,"
                    " models, endpoints, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key_id,
                        name,
                        self._hash(plaintext),
                        role,
                        tenant,
                        info.rpm,
                        info.tpm,
                        info.daily_tokens,
                        _json_list(info.models),
                        _json_list(info.endpoints),
                        info.created_at,
                        info.expires_at,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise InvalidRequest(
                f"a key named {name!r} already exists", param="name", code="key_exists"
            ) from exc
        return plaintext, info

    def list(self) -> list[KeyInfo]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM api_keys ORDER BY created_at, name").fetchall()
        return [_info(r) for r in rows]

    def _find(self, db: sqlite3.Connection, name_or_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM api_keys WHERE id = ?", (name_or_id,)).fetchone()
        if row is None:
            row = db.execute("SELECT * FROM api_keys WHERE name = ?", (name_or_id,)).fetchone()
        if row is None:
            raise NotFound(f"no key named or with id {name_or_id!r}", code="key_not_found")
        return row

    def get(self, name_or_id: str) -> KeyInfo:
        with self._connect() as db:
            return _info(self._find(db, name_or_id))

    def revoke(self, name_or_id: str) -> KeyInfo:
        with self._connect() as db:
            row = self._find(db, name_or_id)
            if row["revoked_at"] is None:
                db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now().isoformat(), row["id"]))
            row = db.execute("SELECT * FROM api_keys WHERE id = ?", (row["id"],)).fetchone()
        return _info(row)

    def has_key(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone() is not None

    def authenticate(self, presented: str) -> KeyInfo | None:
        """The active key matching ``presented``, or None. Constant time in the secret part.

        Records when the key was used, at most once a minute (a write per request would
        serialise every request on the database's write lock)."""
        match = _KEY_RE.match(presented)
        key_id = match.group(1) if match else ""
        try:
            row = self._reader().execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        except sqlite3.Error as exc:
            self._drop_reader()
            raise ServiceUnavailable(
                "Authentication is temporarily unavailable.", code="auth_unavailable", retry_after=1
            ) from exc
        stored = row["key_hash"] if row is not None else _DUMMY_HASH
        ok = hmac.compare_digest(stored, self._hash(presented))
        if not ok or row is None or match is None:
            return None
        info = _info(row)
        now = _now()
        if info.status(now) != "active":
            return None
        if info.last_used_at is None or datetime.fromisoformat(info.last_used_at) <= now - LAST_USED_EVERY:
            # In a thread of its own: the write may wait for the database's lock, and this method
            # runs on the event loop (a lookup on the reused connection costs microseconds).
            touch = threading.Thread(
                target=self._touch, args=(info.id, now), name="llmos-key-touch", daemon=True
            )
            self._touching = touch
            touch.start()
        return info

    def flush(self, timeout: float = 5.0) -> None:
        """Wait for the last last-use write started by ``authenticate`` (tests, shutdown)."""
        touch = self._touching
        if touch is not None:
            touch.join(timeout)

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._db_path, timeout=2.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            self._local.db = db
            with self._readers_lock:
                self._readers.append(db)
        return db

    def _drop_reader(self) -> None:
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            with self._readers_lock:
                self._readers.remove(db)
            db.close()

    def close(self) -> None:
        """Close the read connections (each thread opens its own again if used later)."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for db in readers:
            db.close()
        self._local = threading.local()

    def _touch(self, key_id: str, now: datetime) -> None:
        try:
            with self._connect(timeout=0.2) as db:
                db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now.isoformat(), key_id))
        except sqlite3.Error as exc:  # busy: the next use within the minute tries again
            log.debug("could not record key use: %s", exc.__class__.__name__)


def _json_list(values: tuple[str, ...] | None) -> str | None:
    return json.dumps(list(values)) if values is not None else None


def _tuple(text: str | None) -> tuple[str, ...] | None:
    return tuple(json.loads(text)) if text is not None else None


def _info(row: sqlite3.Row) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        tenant=row["tenant"],
        rpm=row["rpm"],
        tpm=row["tpm"],
        daily_tokens=row["daily_tokens"],
        models=_tuple(row["models"]),
        endpoints=_tuple(row["endpoints"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )
