from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.keys import generate_signing_key, load_private_key
from gateway.audit.log import AuditLog
from gateway.types import AuditRecord
from tests.pgserver import PgServer, pg_server


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey


@pytest.fixture
def keypair(tmp_path: Path) -> KeyPair:
    private_path = tmp_path / "audit-signing.key"
    public_path = tmp_path / "audit-signing.pub"
    public_key = generate_signing_key(private_path, public_path)
    return KeyPair(private_path, public_path, load_private_key(private_path), public_key)


def make_record(n: int = 1, **overrides: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "request_id": f"req-{n:04d}",
        "time": "2025-01-01T00:00:00Z",
        "principal_id": "key:3f2a9c0d1e4b5a69",
        "auth_method": "api_key",
        "tenant": "acme",
        "endpoint": "/v1/chat/completions",
        "model": "tiny",
        "decision": "allow",
        "status": 200,
        "reasons": (),
        "policy_digest": "a" * 64,
        "request_digest": "b" * 64,
        "response_digest": "c" * 64,
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "latency_ms": 42,
    }
    fields.update(overrides)
    return AuditRecord(**fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def open_log(db_path: Path, keypair: KeyPair) -> Iterator[Callable[[], AuditLog]]:
    opened: list[AuditLog] = []

    def factory() -> AuditLog:
        log = AuditLog(db_path, keypair.private_key)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


@pytest.fixture
def filled_log(open_log: Callable[[], AuditLog], db_path: Path) -> Path:
    """Five entries (seq 1..5, request ids req-0001..req-0005), closed; returns the DB path."""
    log = open_log()
    for n in range(1, 6):
        log.append(make_record(n))
    log.close()
    return db_path


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One throwaway PostgreSQL server for the shared-log tests (tests/pgserver.py)."""
    with pg_server(port=55433) as server:
        yield server


@pytest.fixture
def dsn(pg: PgServer) -> Iterator[str]:
    """The server's DSN, with no shared-log tables in it."""
    import psycopg

    from gateway.audit.shared import TABLES

    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS " + ", ".join(TABLES))
    yield pg.dsn
