"""Compliance export bundles verify offline with only the public key, and every way of
tampering with one is caught."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.bundle import export_bundle, verify_bundle
from gateway.audit.log import AuditLog
from gateway.errors import AuditError, AuditVerifyError

from .conftest import KeyPair, make_record


def _record(n: int, tenant: str) -> object:
    return make_record(n, tenant=tenant, time=f"2026-11-{n:02d}T12:00:00.000+00:00")


@pytest.fixture
def log_db(db_path: Path, keypair: KeyPair) -> Path:
    with AuditLog(db_path, keypair.private_key, origin="llmos.test/bundle", checkpoint_every=4) as log:
        for n in range(1, 13):
            log.append(_record(n, "acme" if n % 3 else "globex"))  # type: ignore[arg-type]
    return db_path


@pytest.fixture
def bundle(log_db: Path, keypair: KeyPair, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    report = export_bundle(
        log_db, out, [keypair.public_key], since="2026-11-03T00:00:00", until="2026-11-10T00:00:00"
    )
    assert (report.entries, report.checkpoint_size, report.left_out_unproved) == (7, 12, 0)
    return out


def entries(bundle: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (bundle / "entries.jsonl").read_text().splitlines()]


def rewrite(bundle: Path, lines: list[dict[str, object]]) -> None:
    """Change entries.jsonl and fix the manifest's file hash and count (a careful attacker)."""
    path = bundle / "entries.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["entries.jsonl"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["entries"] = len(lines)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_an_export_verifies_with_only_the_public_key(bundle: Path, keypair: KeyPair) -> None:
    report = verify_bundle(bundle, keypair.public_key)
    assert (report.entries, report.checkpoint_size, report.origin) == (7, 12, "llmos.test/bundle")
    assert report.checkpoints == 3  # the checkpoints at 4 and 8 are consistent with the one at 12
    assert [e["seq"] for e in entries(bundle)] == list(range(3, 10))


def test_a_tenant_export_holds_only_that_tenant(log_db: Path, keypair: KeyPair, tmp_path: Path) -> None:
    out = tmp_path / "globex"
    assert export_bundle(log_db, out, [keypair.public_key], tenant="globex").entries == 4
    assert verify_bundle(out, keypair.public_key).contiguous is False  # gaps are expected here
    assert all('"tenant":"globex"' in str(e["body"]) for e in entries(out))


def test_entries_after_the_last_checkpoint_are_left_out(
    db_path: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    with AuditLog(db_path, keypair.private_key, checkpoint_every=5, checkpoint_interval_s=3600) as log:
        for n in range(1, 8):
            log.append(_record(n, "acme"))  # type: ignore[arg-type]
        report = export_bundle(db_path, tmp_path / "b", [keypair.public_key])
    assert (report.entries, report.checkpoint_size, report.left_out_unproved) == (5, 5, 2)


def test_a_modified_byte_is_caught(bundle: Path, keypair: KeyPair) -> None:
    lines = entries(bundle)
    lines[2]["body"] = str(lines[2]["body"]).replace("acme", "acmf")
    rewrite(bundle, lines)
    with pytest.raises(AuditVerifyError, match=r"seq 5.*hash mismatch"):
        verify_bundle(bundle, keypair.public_key)


def test_a_file_changed_behind_the_manifest(bundle: Path, keypair: KeyPair) -> None:
    with (bundle / "entries.jsonl").open("a") as f:
        f.write("\n")
    with pytest.raises(AuditVerifyError, match="does not match the manifest"):
        verify_bundle(bundle, keypair.public_key)


def test_a_deleted_entry_is_a_gap(bundle: Path, keypair: KeyPair) -> None:
    lines = entries(bundle)
    rewrite(bundle, lines[:3] + lines[4:])
    with pytest.raises(AuditVerifyError, match="missing from the exported range"):
        verify_bundle(bundle, keypair.public_key)


def test_reordered_entries(bundle: Path, keypair: KeyPair) -> None:
    lines = entries(bundle)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(bundle, lines)
    with pytest.raises(AuditVerifyError, match="out of order"):
        verify_bundle(bundle, keypair.public_key)


def test_an_inserted_entry_signed_by_the_key_but_not_in_the_log(
    bundle: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    # The key holder signs an entry that never went into the tree: its proof cannot verify.
    other = tmp_path / "other.db"
    with AuditLog(other, keypair.private_key, origin="llmos.test/bundle") as log:
        for n in range(1, 11):
            log.append(_record(n + 50, "acme"))  # type: ignore[arg-type]
    out = tmp_path / "other-bundle"
    export_bundle(other, out, [keypair.public_key])
    forged = next(e for e in entries(out) if e["seq"] == 10)
    lines = entries(bundle)
    rewrite(bundle, [*lines, forged])
    with pytest.raises(AuditVerifyError, match=r"seq 10.*not in the signed checkpoint's tree"):
        verify_bundle(bundle, keypair.public_key)


def test_the_wrong_key(bundle: Path) -> None:
    with pytest.raises(AuditVerifyError, match=r"checkpoint\.txt"):
        verify_bundle(bundle, Ed25519PrivateKey.generate().public_key())


def test_a_replayed_old_checkpoint(bundle: Path, keypair: KeyPair) -> None:
    old = json.loads((bundle / "checkpoints.jsonl").read_text().splitlines()[0])["note"]
    (bundle / "checkpoint.txt").write_text(old)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["checkpoint.txt"] = hashlib.sha256(old.encode()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditVerifyError, match=r"seq 3 .*not in the signed checkpoint's tree"):
        verify_bundle(bundle, keypair.public_key)


def test_a_fork_is_caught(log_db: Path, bundle: Path, keypair: KeyPair, tmp_path: Path) -> None:
    fork = tmp_path / "fork.db"
    shutil.copy(log_db, fork)
    with AuditLog(fork, keypair.private_key) as log:  # same origin and key, a different entry 13
        log.append(_record(30, "acme"))  # type: ignore[arg-type]
        forked = log.checkpoint()
    assert forked is not None
    with AuditLog(log_db, keypair.private_key) as log:
        log.append(_record(31, "acme"))  # type: ignore[arg-type]
    out = tmp_path / "real"
    export_bundle(log_db, out, [keypair.public_key])
    # Pass the forked log's checkpoint off as an earlier checkpoint of the real one.
    line = json.dumps({"size": forked.size, "note": forked.note, "created": "x", "consistency": []})
    path = out / "checkpoints.jsonl"
    path.write_text(path.read_text() + line + "\n")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["checkpoints.jsonl"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditVerifyError, match="fork"):
        verify_bundle(out, keypair.public_key)


def test_export_refuses_a_non_empty_directory_and_a_log_without_checkpoint(
    log_db: Path, bundle: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    with pytest.raises(AuditError, match="not empty"):
        export_bundle(log_db, bundle, [keypair.public_key])
    empty = tmp_path / "empty.db"
    AuditLog(empty, keypair.private_key).close()
    with pytest.raises(AuditError, match="no signed checkpoint"):
        export_bundle(empty, tmp_path / "e", [keypair.public_key])


# -- what the unsigned manifest claims is checked against the signed contents ----------------


def fix_manifest(bundle: Path, **changes: object) -> None:
    """Rewrite files' hashes (and any given manifest members) as a careful attacker would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("entries.jsonl", "checkpoint.txt", "checkpoints.jsonl"):
        manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    manifest.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_entries_cut_at_the_ends_need_the_expected_range(bundle: Path, keypair: KeyPair) -> None:
    lines = entries(bundle)
    rewrite(bundle, lines[1:-1])
    with pytest.raises(AuditVerifyError, match="seq range 3-9 is not the entries' 4-8"):
        verify_bundle(bundle, keypair.public_key)
    fix_manifest(bundle, first_seq=4, last_seq=8)  # the manifest is not signed: it can be made to agree
    assert verify_bundle(bundle, keypair.public_key).entries == 5
    with pytest.raises(AuditVerifyError, match="holds entries 4-8, expected 3-9"):
        verify_bundle(bundle, keypair.public_key, expect_seq=(3, 9))  # what the auditor asked for


def test_a_tenant_bundle_holds_only_that_tenant(bundle: Path, keypair: KeyPair) -> None:
    filters = {"since": None, "until": None, "tenant": "globex"}
    rewrite(bundle, entries(bundle)[1:2])  # seq 4, acme's, in a bundle that claims to be globex's
    fix_manifest(bundle, filters=filters, first_seq=4, last_seq=4)
    with pytest.raises(AuditVerifyError, match="not of tenant 'globex'"):
        verify_bundle(bundle, keypair.public_key)


def test_a_checkpoint_of_another_log_signed_by_the_same_key(
    bundle: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with AuditLog(other, keypair.private_key, origin="llmos.test/other") as log:
        for n in range(1, 13):
            log.append(_record(n, "acme"))  # type: ignore[arg-type]
    out = tmp_path / "other-bundle"
    export_bundle(other, out, [keypair.public_key])
    (bundle / "checkpoint.txt").write_text((out / "checkpoint.txt").read_text())
    fix_manifest(bundle)
    with pytest.raises(AuditVerifyError, match="manifest names origin"):
        verify_bundle(bundle, keypair.public_key)
    fix_manifest(bundle, origin="llmos.test/other")
    with pytest.raises(AuditVerifyError, match="checkpoint"):
        verify_bundle(bundle, keypair.public_key, origin="llmos.test/bundle")  # the auditor's pin


def test_an_honest_time_range_export_verifies_when_logging_order_differs(
    db_path: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    # Requests are logged when they finish: seq order is not start-time order.
    days = [3, 4, 2, 5, 11, 6]
    with AuditLog(db_path, keypair.private_key) as log:
        for n, day in enumerate(days, start=1):
            log.append(make_record(n, time=f"2026-11-{day:02d}T12:00:00.000+00:00"))
    out = tmp_path / "range"
    report = export_bundle(
        db_path, out, [keypair.public_key], since="2026-11-03T00:00:00", until="2026-11-07"
    )
    assert report.entries == 6  # seq 1..6: the span from the first to the last match, context included
    assert verify_bundle(out, keypair.public_key, expect_seq=(1, 6)).contiguous
