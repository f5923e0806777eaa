"""The log's Merkle tree and signed checkpoints: group commit, proofs, and tampering that only
checkpoints can catch (truncation, forks, replayed or re-signed checkpoints, rotated keys)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from gateway.audit.store import AuditStore
from gateway.audit.verify import open_checkpoint, verify_log
from gateway.errors import AuditError, AuditVerifyError

from .conftest import KeyPair, make_record


def leaves(db_path: Path) -> list[bytes]:
    with AuditStore.open_readonly(db_path) as store:
        return [merkle.leaf_hash(row.body.encode()) for row in store.iter_entries()]


def fill(log: AuditLog, first: int, last: int) -> None:
    for n in range(first, last + 1):
        log.append(make_record(n))


def test_checkpoints_sign_the_root_of_the_entries(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key, origin="example.org/audit", checkpoint_every=3) as log:
        fill(log, 1, 7)
        latest = log.checkpoint()
        assert latest is not None and latest.size == 7
        assert log.verifier_key.startswith("example.org/audit+")
    with AuditStore.open_readonly(db_path) as store:
        sizes = [size for size, _, _ in store.checkpoints()]
    assert sizes == [3, 6, 7]  # every 3 entries, and on demand
    hashes = leaves(db_path)
    cp = open_checkpoint(latest.note, keypair.public_key)
    assert cp == Checkpoint("example.org/audit", 7, merkle.root(hashes))
    report = verify_log(db_path, keypair.public_key)
    assert (report.entries, report.checkpoints, report.root) == (7, 3, merkle.root(hashes).hex())


def test_proofs_verify_against_checkpoints(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key) as log:
        fill(log, 1, 5)
        old = log.checkpoint()
        fill(log, 6, 13)
        new = log.checkpoint()
        assert old is not None and new is not None
        old_cp, new_cp = (
            open_checkpoint(old.note, keypair.public_key),
            open_checkpoint(new.note, keypair.public_key),
        )
        hashes = leaves(db_path)
        for seq in range(1, 14):
            proof = log.inclusion_proof(seq, new.size)
            merkle.verify_inclusion(hashes[seq - 1], seq - 1, new.size, proof, new_cp.root_hash)
        proof = log.consistency_proof(old.size, new.size)
        merkle.verify_consistency(old.size, new.size, old_cp.root_hash, new_cp.root_hash, proof)
        with pytest.raises(merkle.MerkleProofError):
            merkle.verify_inclusion(
                hashes[0], 1, new.size, log.inclusion_proof(1, new.size), new_cp.root_hash
            )


def test_concurrent_appends_share_commits(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key) as log:
        barrier = threading.Barrier(16)

        def worker(t: int) -> None:
            barrier.wait()
            for i in range(20):
                log.append(make_record(t * 100 + i))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert log.commits < 320  # group commit: several appends per transaction
    assert verify_log(db_path, keypair.public_key).entries == 320


def test_an_idle_log_checkpoints_after_the_interval(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key, checkpoint_interval_s=0.05) as log:
        fill(log, 1, 2)
        deadline = time.monotonic() + 5
        while (latest := log.latest_checkpoint()) is None or latest.size < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_log_from_before_the_tree_gets_one(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key) as log:
        fill(log, 1, 6)
    conn = sqlite3.connect(db_path)  # back to schema 2: entries only
    with conn:
        for table in ("audit_nodes", "audit_checkpoints", "audit_meta"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    with AuditLog(db_path, keypair.private_key) as log:
        fill(log, 7, 9)
        latest = log.checkpoint()
    assert latest is not None and latest.size == 9
    assert open_checkpoint(latest.note, keypair.public_key).root_hash == merkle.root(leaves(db_path))
    assert verify_log(db_path, keypair.public_key).entries == 9


# -- tampering that needs the checkpoints ----------------------------------------------------


@pytest.fixture
def checkpointed(db_path: Path, keypair: KeyPair) -> Path:
    with AuditLog(db_path, keypair.private_key, origin="llmos.test/log") as log:
        fill(log, 1, 8)  # closing signs a checkpoint at size 8
    return db_path


def sql(db_path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def stored_note(db_path: Path) -> str:
    with AuditStore.open_readonly(db_path) as store:
        latest = store.latest_checkpoint()
    assert latest is not None
    return latest[1]


def test_truncation_behind_a_retained_checkpoint(checkpointed: Path, keypair: KeyPair) -> None:
    kept = stored_note(checkpointed)  # what an auditor kept
    sql(checkpointed, "DELETE FROM audit_entries WHERE seq > 6")
    sql(checkpointed, "DELETE FROM audit_checkpoints")  # the attacker removes the evidence in the file
    with pytest.raises(AuditVerifyError, match="signed head: it covers 8 entries but the log holds 6"):
        verify_log(checkpointed, keypair.public_key)  # the signed head in the file still tells
    sql(checkpointed, "DELETE FROM audit_meta WHERE key = 'head'")
    with pytest.raises(AuditVerifyError, match=r"seq 1 .*not signed"):
        verify_log(checkpointed, keypair.public_key)  # and without it nothing signs the entries
    with pytest.raises(AuditVerifyError, match="covers 8 entries but the log holds 6"):
        verify_log(checkpointed, keypair.public_key, checkpoints=[kept])


def test_a_fork_is_caught(checkpointed: Path, keypair: KeyPair, tmp_path: Path) -> None:
    fork = tmp_path / "fork.db"
    shutil.copy(checkpointed, fork)
    with AuditLog(checkpointed, keypair.private_key) as log:
        fill(log, 9, 10)
        ours = log.checkpoint()
    with AuditLog(fork, keypair.private_key) as log:
        fill(log, 20, 21)  # same origin and key, different entries 9 and 10
        theirs = log.checkpoint()
    assert ours is not None and theirs is not None and ours.size == theirs.size == 10
    with pytest.raises(AuditVerifyError, match=r"do not have its root.*forked"):
        verify_log(fork, keypair.public_key, checkpoints=[ours.note])


def test_a_checkpoint_of_another_log_is_a_replay(
    checkpointed: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with AuditLog(other, keypair.private_key, origin="llmos.test/other") as log:
        fill(log, 1, 8)
    with pytest.raises(AuditVerifyError, match="origin"):
        verify_log(checkpointed, keypair.public_key, checkpoints=[stored_note(other)])


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n8\n", "\n7\n"), ("llmos.test/log\n", "llmos.test/lox\n")],
    ids=["size", "origin"],
)
def test_an_edited_stored_checkpoint(checkpointed: Path, keypair: KeyPair, old: str, new: str) -> None:
    note = stored_note(checkpointed)
    sql(checkpointed, "UPDATE audit_checkpoints SET note = ?", (note.replace(old, new, 1),))
    with pytest.raises(AuditVerifyError, match="stored checkpoint"):
        verify_log(checkpointed, keypair.public_key)


def test_an_altered_entry_under_a_checkpoint_is_named_first(checkpointed: Path, keypair: KeyPair) -> None:
    sql(checkpointed, "UPDATE audit_entries SET body = replace(body, 'acme', 'acmf') WHERE seq = 3")
    with pytest.raises(AuditVerifyError, match="hash mismatch") as info:
        verify_log(checkpointed, keypair.public_key)
    assert info.value.seq == 3


def test_a_checkpoint_signed_by_another_key(checkpointed: Path, keypair: KeyPair) -> None:
    body = open_checkpoint(stored_note(checkpointed), keypair.public_key)
    forged = sign_checkpoint(body, NoteSigner("llmos.test/log", Ed25519PrivateKey.generate()))
    sql(checkpointed, "UPDATE audit_checkpoints SET note = ?", (forged.decode(),))
    with pytest.raises(AuditVerifyError, match=r"stored checkpoint at size 8: .*no signature by a known key"):
        verify_log(checkpointed, keypair.public_key)


def test_rotated_keys_keep_old_checkpoints_verifiable(
    checkpointed: Path, keypair: KeyPair, open_log: Callable[[], AuditLog]
) -> None:
    new_key = Ed25519PrivateKey.generate()
    with AuditLog(checkpointed, new_key) as log:
        fill(log, 9, 12)
        assert log.checkpoint() is not None
    report = verify_log(checkpointed, [keypair.public_key, new_key.public_key()])
    assert (report.entries, report.checkpoints) == (12, 2)
    with pytest.raises(AuditVerifyError):
        verify_log(checkpointed, new_key.public_key())  # old entries and checkpoint need the old key


def test_a_tree_longer_than_the_log_refuses_to_open(checkpointed: Path, keypair: KeyPair) -> None:
    sql(checkpointed, "DELETE FROM audit_entries WHERE seq = 8")
    with pytest.raises(AuditError, match="entries were removed"):
        AuditLog(checkpointed, keypair.private_key)


def test_the_origin_never_changes(checkpointed: Path, keypair: KeyPair) -> None:
    with pytest.raises(AuditError, match="origin"):
        AuditLog(checkpointed, keypair.private_key, origin="llmos.test/renamed")


def test_a_log_cut_back_behind_its_checkpoint_refuses_to_open(checkpointed: Path, keypair: KeyPair) -> None:
    sql(checkpointed, "DELETE FROM audit_entries WHERE seq > 6")
    sql(checkpointed, "DELETE FROM audit_nodes WHERE idx >= 6 AND level = 0")
    with pytest.raises(AuditError, match="checkpoint covers 8 entries but the log holds 6"):
        AuditLog(checkpointed, keypair.private_key)
