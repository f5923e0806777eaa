"""``llmos audit pull``: copy the shared log's integrated part from PostgreSQL into a new SQLite
audit file, byte for byte (entry bodies, Merkle nodes, signed checkpoints, the signed head,
the origin). The copy is an ordinary audit log file: ``llmos audit verify``, ``export`` and
``checkpoint`` work on it offline, with nothing trusted from PostgreSQL but what the
signatures and hashes prove.

The copy is one consistent snapshot (a ``REPEATABLE READ`` read-only transaction): entries
appended but not yet integrated are not in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.audit.integrator import HEAD_SEQ_KEY, ORIGIN_KEY
from gateway.audit.shared import connect
from gateway.audit.store import HEAD_META_KEY, AuditStore
from gateway.errors import AuditError

_BATCH = 2000


@dataclass(frozen=True)
class Pulled:
    entries: int
    checkpoints: int
    pending: int  # appended, not yet integrated (not copied)


def pull_shared(dsn: str, out: Path) -> Pulled:
    """Copy the shared log into ``out``, which must not exist yet."""
    import psycopg

    out = Path(out)
    if out.exists():
        raise AuditError(f"{out} exists: pull writes a new audit file")
    try:
        with connect(dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return _copy(conn, out)
    except psycopg.Error as exc:
        out.unlink(missing_ok=True)
        raise AuditError(f"cannot read the shared audit log ({type(exc).__name__}: {exc})") from exc
    except BaseException:
        out.unlink(missing_ok=True)
        raise


def _copy(conn: object, out: Path) -> Pulled:
    from psycopg import Connection

    assert isinstance(conn, Connection)
    meta = dict(conn.execute("SELECT key, value FROM audit_shared_meta").fetchall())
    if ORIGIN_KEY not in meta:
        raise AuditError("the shared audit log has no origin yet: no integrator has run")
    pending = conn.execute("SELECT count(*) FROM audit_shared WHERE seq IS NULL").fetchone()
    store = AuditStore.open(out)
    try:
        with store.transaction():
            store.set_meta("origin", meta[ORIGIN_KEY])
            if HEAD_META_KEY in meta:
                store.set_meta(HEAD_META_KEY, meta[HEAD_META_KEY])
            entries = 0
            with conn.cursor(name="llmos_pull_entries") as cur:
                cur.execute(
                    "SELECT seq, request_id, body, entry_hash, phase, openings FROM audit_shared"
                    " WHERE seq IS NOT NULL ORDER BY seq"
                )
                while rows := cur.fetchmany(_BATCH):
                    store.insert_entries(
                        (int(r[0]), r[1], bytes(r[2]).decode("utf-8"), r[3], "", r[4], r[5]) for r in rows
                    )
                    entries += len(rows)
            if str(entries) != meta.get(HEAD_SEQ_KEY, "0"):
                raise AuditError(
                    f"the shared audit log holds {entries} integrated entries but its signed head"
                    f" says {meta.get(HEAD_SEQ_KEY)!r}"
                )
            with conn.cursor(name="llmos_pull_nodes") as cur:
                cur.execute("SELECT level, idx, value FROM audit_shared_nodes ORDER BY level, idx")
                while rows := cur.fetchmany(_BATCH):
                    store.insert_nodes((int(r[0]), int(r[1]), bytes(r[2])) for r in rows)
            checkpoints = conn.execute(
                "SELECT size, note, created FROM audit_shared_checkpoints ORDER BY size"
            ).fetchall()
            for size, note, created in checkpoints:
                store.insert_checkpoint(int(size), note, created)
    finally:
        store.close()
    return Pulled(entries, len(checkpoints), 0 if pending is None else int(pending[0]))
