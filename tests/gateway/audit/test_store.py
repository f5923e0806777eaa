from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.audit import store as store_module
from gateway.audit.store import SCHEMA_VERSION, AuditStore, Head
from gateway.errors import AuditError


def test_new_store_pragmas_and_schema(db_path: Path) -> None:
    with AuditStore.open(db_path) as store:
        assert store.head() is None
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_append_head_iter_get(db_path: Path) -> None:
    with AuditStore.open(db_path) as store:
        store.append(1, "r1", "{}", "h1", "s1")
        store.append(2, "r2", "{}", "h2", "s2")
        assert store.head() == Head(seq=2, entry_hash="h2")
        assert [e.seq for e in store.iter_entries()] == [1, 2]
        got = store.get("r2")
        assert got is not None
        assert (got.seq, got.entry_hash, got.signature) == (2, "h2", "s2")
        assert store.get("nope") is None
    with AuditStore.open(db_path) as store:  # reopen keeps the rows
        assert store.head() == Head(seq=2, entry_hash="h2")


def test_append_refuses_wrong_seq_and_duplicate_request_id(db_path: Path) -> None:
    with AuditStore.open(db_path) as store:
        store.append(1, "r1", "{}", "h1", "s1")
        with pytest.raises(AuditError, match="cannot append seq 3 after seq 1"):
            store.append(3, "r3", "{}", "h3", "s3")
        with pytest.raises(AuditError, match="request id already logged"):
            store.append(2, "r1", "{}", "h2", "s2")
        assert store.head() == Head(seq=1, entry_hash="h1")
        store.append(2, "r2", "{}", "h2", "s2")  # the failed appends left no transaction open


@pytest.mark.parametrize("relative", ["missing-dir/audit.db", "."])
def test_unwritable_path_raises_audit_error(tmp_path: Path, relative: str) -> None:
    with pytest.raises(AuditError, match="cannot open audit store"):
        AuditStore.open(tmp_path / relative)


def test_readonly_open_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="does not exist"):
        AuditStore.open_readonly(tmp_path / "missing.db")
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(AuditError, match="schema version 0"):
        AuditStore.open_readonly(other)
    not_sqlite = tmp_path / "text.db"
    not_sqlite.write_text("hello, this is not a database at all" * 100)
    with pytest.raises(AuditError, match=r"text\.db"):
        AuditStore.open_readonly(not_sqlite)


def test_newer_schema_refused(db_path: Path) -> None:
    AuditStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(AuditError, match="schema version 99"):
        AuditStore.open(db_path)
    with pytest.raises(AuditError, match="schema version 99"):
        AuditStore.open_readonly(db_path)


def test_readonly_store_cannot_write(db_path: Path) -> None:
    AuditStore.open(db_path).close()
    with AuditStore.open_readonly(db_path) as store, pytest.raises(AuditError, match="cannot write"):
        store.append(1, "r1", "{}", "h1", "s1")


def test_a_store_of_an_older_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, "
        "body TEXT NOT NULL, entry_hash TEXT NOT NULL, signature TEXT NOT NULL)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match=f"schema version 1, this llmos reads version {SCHEMA_VERSION}"):
        AuditStore.open(db)


def test_group_inserts_go_in_a_few_multi_row_statements(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_ROWS_PER_STATEMENT", 4)
    statements: list[str] = []
    with AuditStore.open(db_path) as store:
        store._conn.set_trace_callback(statements.append)
        rows = [(seq, f"r{seq}", "{}", f"h{seq}", "", "complete", "") for seq in range(1, 12)]
        with store.transaction():
            store.insert_entries(rows)
        store._conn.set_trace_callback(None)
        assert [row.seq for row in store.iter_entries()] == list(range(1, 12))
        assert [row.request_id for row in store.iter_entries()][-1] == "r11"
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert [s.count("(") - 1 for s in inserts] == [4, 4, 2, 1]  # 11 rows: 4 + 4 + 2 + 1


def test_a_refused_row_fails_its_whole_group_insert(db_path: Path) -> None:
    with AuditStore.open(db_path) as store:
        store.append(1, "taken", "{}", "h1", "")
        rows = [(2, "fresh", "{}", "h2", "", "complete", ""), (3, "taken", "{}", "h3", "", "complete", "")]
        with pytest.raises(AuditError, match="request id already logged"), store.transaction():
            store.insert_entries(rows)
        assert [row.seq for row in store.iter_entries()] == [1]
