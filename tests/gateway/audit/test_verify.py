"""Tampering with a real audit file is detected and names the first bad entry."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.entry import build_entry, encode_entry, entry_hash, sign_body
from gateway.audit.log import AuditLog
from gateway.audit.verify import verify_log
from gateway.errors import AuditError, AuditVerifyError

from .conftest import KeyPair, make_record


def sql(db_path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            for statement in statements:
                conn.execute(statement, params if "?" in statement else ())
    finally:
        conn.close()


def row(db_path: Path, seq: int) -> tuple[str, str, str, str]:
    conn = sqlite3.connect(db_path)
    try:
        found = conn.execute(
            "SELECT request_id, body, entry_hash, signature FROM audit_entries WHERE seq = ?", (seq,)
        ).fetchone()
    finally:
        conn.close()
    return found


def signed_row(key: Ed25519PrivateKey, n: int, seq: int, prev: str) -> tuple[int, str, str, str, str, str]:
    record = make_record(n)
    body = encode_entry(build_entry(record, seq=seq, prev=prev))
    return (seq, record.request_id, body.decode(), entry_hash(body), sign_body(key, body), record.phase)


def insert(db_path: Path, values: tuple[int, str, str, str, str, str]) -> None:
    sql(
        db_path,
        "INSERT INTO audit_entries (seq, request_id, body, entry_hash, signature, phase) VALUES (?, ?, ?, ?, ?, ?)",
        params=values,
    )


def stored_head(db_path: Path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        found = conn.execute("SELECT value FROM audit_meta WHERE key = 'head'").fetchone()
    finally:
        conn.close()
    return str(found[0])


def expect_failure(db_path: Path, keypair: KeyPair, seq: int, why: str) -> AuditVerifyError:
    with pytest.raises(AuditVerifyError, match=why) as info:
        verify_log(db_path, keypair.public_key)
    assert info.value.seq == seq
    assert f"seq {seq} " in str(info.value)
    return info.value


def test_untouched_log_verifies(filled_log: Path, keypair: KeyPair) -> None:
    report = verify_log(filled_log, keypair.public_key)
    assert report.entries == 5
    assert report.head_hash == row(filled_log, 5)[2]


def test_altered_body_field(filled_log: Path, keypair: KeyPair) -> None:
    sql(
        filled_log,
        'UPDATE audit_entries SET body = replace(body, \'"tenant":"acme"\', '
        '\'"tenant":"evil"\') WHERE seq = 3',
    )
    assert '"tenant":"evil"' in row(filled_log, 3)[1]
    error = expect_failure(filled_log, keypair, 3, "hash mismatch")
    assert "req-0003" in str(error)


def test_altered_body_with_recomputed_hash(filled_log: Path, keypair: KeyPair) -> None:
    body = row(filled_log, 3)[1].replace('"status":200', '"status":500')
    sql(
        filled_log,
        "UPDATE audit_entries SET body = ?, entry_hash = ? WHERE seq = 3",
        params=(body, entry_hash(body.encode())),
    )
    expect_failure(filled_log, keypair, 3, "does not match its leaf")
    # With the stored tree altered to match, the next entry's chain names where it broke...
    sql(filled_log, "DELETE FROM audit_nodes")
    expect_failure(filled_log, keypair, 4, "chain broken")
    # ...and with the chain rewritten too, the signed head's root still catches it.
    sql(filled_log, "DELETE FROM audit_entries WHERE seq > 3")
    with pytest.raises(AuditVerifyError, match="it covers 5 entries but the log holds 3"):
        verify_log(filled_log, keypair.public_key)


def test_entries_carry_no_signature_of_their_own(filled_log: Path, keypair: KeyPair) -> None:
    """Each transaction signs the tree once (the signed head), instead of each entry."""
    assert {row(filled_log, seq)[3] for seq in range(1, 6)} == {""}
    assert verify_log(filled_log, keypair.public_key).signed_head


def test_unsigned_entries_without_their_signed_head(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "DELETE FROM audit_meta WHERE key = 'head'", "DELETE FROM audit_checkpoints")
    expect_failure(filled_log, keypair, 1, "not signed: no signed checkpoint or signed head covers it")


def test_an_older_signed_head_put_back(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair
) -> None:
    with open_log() as log:
        for n in range(3):
            log.append(make_record(n))
        old_head = stored_head(db_path)
        for n in range(3, 6):
            log.append(make_record(n))
    sql(db_path, "DELETE FROM audit_checkpoints")
    sql(db_path, "UPDATE audit_meta SET value = ? WHERE key = 'head'", params=(old_head,))
    expect_failure(db_path, keypair, 4, "not signed")  # the entries after the old head are bare


@pytest.mark.parametrize("signature_from", ["other-entry", "garbage"])
def test_altered_signature(filled_log: Path, keypair: KeyPair, signature_from: str) -> None:
    """An entry's own signature, when it has one (entries before signed heads), must verify."""
    other = encode_entry(build_entry(make_record(99), seq=1, prev="0" * 64))
    signature = {"other-entry": sign_body(keypair.private_key, other), "garbage": "AAAA"}[signature_from]
    sql(filled_log, "UPDATE audit_entries SET signature = ? WHERE seq = 2", params=(signature,))
    expect_failure(filled_log, keypair, 2, "bad signature")


def test_deleted_middle_entry(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "DELETE FROM audit_entries WHERE seq = 3")
    expect_failure(filled_log, keypair, 4, "seq gap: expected seq 3, found 4")


def test_deleted_middle_entry_and_renumbered(filled_log: Path, keypair: KeyPair) -> None:
    sql(
        filled_log,
        "DELETE FROM audit_entries WHERE seq = 3",
        "UPDATE audit_entries SET seq = seq - 1 WHERE seq > 3",
    )
    expect_failure(filled_log, keypair, 3, "body says seq 4")


def test_swapped_entries(filled_log: Path, keypair: KeyPair) -> None:
    sql(
        filled_log,
        "UPDATE audit_entries SET seq = -2 WHERE seq = 2",
        "UPDATE audit_entries SET seq = 2 WHERE seq = 4",
        "UPDATE audit_entries SET seq = 4 WHERE seq = -2",
    )
    error = expect_failure(filled_log, keypair, 2, "swapped")
    assert "req-0004" in str(error)


def test_row_request_id_edited(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "UPDATE audit_entries SET request_id = 'innocent' WHERE seq = 2")
    expect_failure(filled_log, keypair, 2, "body says request id 'req-0002'")


def test_replayed_entry_appended(filled_log: Path, keypair: KeyPair) -> None:
    _, body, digest, signature = row(filled_log, 2)
    insert(filled_log, (6, "replay", body, digest, signature, "complete"))
    expect_failure(filled_log, keypair, 6, "not signed")  # beyond the signed head
    other = encode_entry(build_entry(make_record(99), seq=1, prev="0" * 64))
    sql(
        filled_log,
        "UPDATE audit_entries SET signature = ? WHERE seq = 6",
        params=(sign_body(keypair.private_key, other),),
    )
    expect_failure(filled_log, keypair, 6, "bad signature")


def test_entry_replaced_by_key_holder_breaks_chain(filled_log: Path, keypair: KeyPair) -> None:
    # Even a correctly signed replacement for entry 3 breaks the link from entry 4.
    prev = row(filled_log, 2)[2]
    replacement = signed_row(keypair.private_key, 33, 3, prev)
    sql(filled_log, "DELETE FROM audit_entries WHERE seq = 3")
    insert(filled_log, replacement)
    expect_failure(filled_log, keypair, 3, "does not match its leaf")
    sql(filled_log, "DELETE FROM audit_nodes")  # the tree table altered to match
    expect_failure(filled_log, keypair, 4, "chain broken")


def test_inserted_entry_with_wrong_prev(filled_log: Path, keypair: KeyPair) -> None:
    insert(filled_log, signed_row(keypair.private_key, 6, 6, "e" * 64))
    expect_failure(filled_log, keypair, 6, "chain broken")


def test_forged_entry_signed_by_another_key(filled_log: Path, keypair: KeyPair) -> None:
    insert(filled_log, signed_row(Ed25519PrivateKey.generate(), 6, 6, row(filled_log, 5)[2]))
    expect_failure(filled_log, keypair, 6, "bad signature")


def test_wrong_public_key(filled_log: Path, keypair: KeyPair) -> None:
    with pytest.raises(AuditVerifyError, match="no signature by a known key") as info:
        verify_log(filled_log, Ed25519PrivateKey.generate().public_key())
    assert "seq 1" not in str(info.value)


def test_unparseable_body_signed_by_the_key(filled_log: Path, keypair: KeyPair) -> None:
    body = b"this is not json"
    insert(
        filled_log,
        (6, "junk", body.decode(), entry_hash(body), sign_body(keypair.private_key, body), "complete"),
    )
    expect_failure(filled_log, keypair, 6, "unparseable body")


def test_invalid_utf8_body(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "UPDATE audit_entries SET body = CAST(X'7BFF7D' AS TEXT) WHERE seq = 2")
    expect_failure(filled_log, keypair, 2, "hash mismatch")


def test_blob_body(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "UPDATE audit_entries SET body = CAST(body AS BLOB) WHERE seq = 2")
    expect_failure(filled_log, keypair, 2, "not text")


def test_duplicate_request_id(filled_log: Path, keypair: KeyPair) -> None:
    # The UNIQUE constraint stops this; an attacker (or a bug) could rebuild the table without it.
    sql(
        filled_log,
        "CREATE TABLE loose (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL, body TEXT NOT NULL, "
        "entry_hash TEXT NOT NULL, signature TEXT NOT NULL, phase TEXT NOT NULL, openings TEXT NOT NULL DEFAULT '')",
        "INSERT INTO loose SELECT * FROM audit_entries",
        "DROP TABLE audit_entries",
        "ALTER TABLE loose RENAME TO audit_entries",
    )
    insert(filled_log, signed_row(keypair.private_key, 1, 6, row(filled_log, 5)[2]))
    error = expect_failure(filled_log, keypair, 6, "duplicate request id")
    assert "req-0001" in str(error)


def test_phase_column_edited(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "UPDATE audit_entries SET phase = 'stream_end' WHERE seq = 3")
    expect_failure(filled_log, keypair, 3, "phase")


def test_first_bad_entry_is_named(filled_log: Path, keypair: KeyPair) -> None:
    for seq in (4, 2):
        body = row(filled_log, seq)[1].replace('"status":200', '"status":500')
        sql(
            filled_log,
            "UPDATE audit_entries SET body = ?, entry_hash = ? WHERE seq = ?",
            params=(body, entry_hash(body.encode()), seq),
        )
    expect_failure(filled_log, keypair, 2, "does not match its leaf")


def test_a_truncated_tail_is_caught_by_the_signed_checkpoint(
    filled_log: Path, keypair: KeyPair, open_log: Callable[[], AuditLog]
) -> None:
    """A hash chain alone cannot see its tail cut off; the checkpoint signed at close can."""
    sql(filled_log, "DELETE FROM audit_entries WHERE seq = 5")
    with pytest.raises(AuditVerifyError, match=r"covers 5 entries but the log holds 4.*truncated"):
        verify_log(filled_log, keypair.public_key)
    # And the gateway refuses to write on after the cut (fail closed).
    with pytest.raises(AuditError, match="entries were removed"):
        open_log()


def test_verify_never_modifies_the_file(filled_log: Path, keypair: KeyPair) -> None:
    def digest() -> str:
        return hashlib.sha256(filled_log.read_bytes()).hexdigest()

    before = digest()
    verify_log(filled_log, keypair.public_key)
    assert digest() == before
    # A read-only reader of a WAL database may leave an empty -wal file behind; nothing more.
    wal = filled_log.with_name(filled_log.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    sql(filled_log, "DELETE FROM audit_entries WHERE seq = 3")
    tampered = digest()
    with pytest.raises(AuditVerifyError):
        verify_log(filled_log, keypair.public_key)
    assert digest() == tampered


def test_verify_read_only_file(filled_log: Path, keypair: KeyPair) -> None:
    sql(filled_log, "PRAGMA journal_mode = DELETE")  # as shipped to an auditor: one plain file
    filled_log.chmod(0o444)
    assert verify_log(filled_log, keypair.public_key).entries == 5


def test_verify_while_the_gateway_writes(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair
) -> None:
    log = open_log()
    for n in range(3):
        log.append(make_record(n))
    assert verify_log(db_path, keypair.public_key).entries == 3
    log.append(make_record(3))
    assert verify_log(db_path, keypair.public_key).entries == 4


def test_missing_or_foreign_file_is_audit_error(tmp_path: Path, keypair: KeyPair) -> None:
    with pytest.raises(AuditError, match="does not exist"):
        verify_log(tmp_path / "missing.db", keypair.public_key)
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"")
    with pytest.raises(AuditError, match="schema version 0"):
        verify_log(foreign, keypair.public_key)


def test_verify_reads_one_snapshot_while_the_gateway_writes(
    open_log: Callable[[], AuditLog], db_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries committed between reading the signed head and reading the entries are not seen
    as unsigned: the walk reads the same state of the file as the head."""
    log = open_log()
    for n in range(3):
        log.append(make_record(n))
    from gateway.audit import store as store_module

    original = store_module.AuditStore.iter_leaves

    def append_then_iterate(self: store_module.AuditStore) -> object:
        log.append(make_record(99))  # commits a new entry and a new head after the head was read
        return original(self)

    monkeypatch.setattr(store_module.AuditStore, "iter_leaves", append_then_iterate)
    assert verify_log(db_path, keypair.public_key).entries == 3
