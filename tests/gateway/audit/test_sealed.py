"""Sealed fields: salted commitments in the signed entry, openings beside it, so that an export
can withhold a field (principal ids) and still verify; a changed opening is caught."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.audit.bundle import export_bundle, verify_bundle
from gateway.audit.entry import (
    GENESIS_HASH,
    SEALABLE_FIELDS,
    build_entry,
    encode_entry,
    open_sealed,
    parse_entry,
    seal,
)
from gateway.audit.log import AuditLog
from gateway.audit.verify import verify_log
from gateway.errors import AuditError, AuditVerifyError

from .conftest import KeyPair, make_record

SEALED = ("principal_id", "tenant", "policy_input")


def test_sealing_round_trips_and_hides_the_values() -> None:
    entry = build_entry(make_record(1, policy_input='{"pii":{}}'), seq=1, prev="0" * 64)
    sealed, openings = seal(entry, SEALED)
    assert sealed["v"] == 9 and set(sealed["sealed"]) == set(SEALED)  # type: ignore[arg-type]
    assert all(field not in sealed for field in SEALED)
    assert "key:3f2a9c0d1e4b5a69" not in json.dumps(sealed)
    from gateway.audit.canonical import canonical_json

    parsed = parse_entry(canonical_json(sealed))
    assert open_sealed(parsed, openings) == {**entry, "v": 9}
    partial = open_sealed(parsed, {k: v for k, v in openings.items() if k != "principal_id"})
    assert partial["withheld"] == ["principal_id"] and "principal_id" not in partial
    # Same value, another salt: another commitment (a guess cannot be confirmed by hashing it).
    again, _ = seal(entry, SEALED)
    assert again["sealed"] != sealed["sealed"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: o["tenant"].update(value="globex"),
        lambda o: o["tenant"].update(salt="AAAA"),
        lambda o: o.update(model={"salt": "AAAA", "value": "x"}),
        lambda o: o.update(tenant=o["principal_id"]),  # an opening moved to another field
    ],
    ids=["value", "salt", "unsealed-field", "moved"],
)
def test_a_changed_opening_is_caught(tamper: object) -> None:
    entry = build_entry(make_record(1), seq=1, prev="0" * 64)
    sealed, openings = seal(entry, SEALED)
    openings = json.loads(json.dumps(openings))
    tamper(openings)  # type: ignore[operator]
    with pytest.raises(AuditError):
        open_sealed(sealed, openings)


def test_only_sealable_fields() -> None:
    assert "request_id" not in SEALABLE_FIELDS and "time" not in SEALABLE_FIELDS
    with pytest.raises(AuditError, match="cannot be sealed"):
        seal(build_entry(make_record(1), seq=1, prev="0" * 64), ("request_id",))


@pytest.fixture
def sealed_log(db_path: Path, keypair: KeyPair) -> Path:
    with AuditLog(db_path, keypair.private_key, sealed_fields=SEALED) as log:
        for n in range(1, 7):
            log.append(make_record(n, tenant="acme" if n % 2 else "globex"))
        entry = log.get("req-0003")
    assert entry is not None and entry["tenant"] == "acme" and entry["v"] == 9  # readers see values
    return db_path


def test_a_sealed_log_verifies_and_catches_an_edited_opening(sealed_log: Path, keypair: KeyPair) -> None:
    assert verify_log(sealed_log, keypair.public_key).entries == 6
    conn = sqlite3.connect(sealed_log)
    with conn:
        conn.execute("UPDATE audit_entries SET openings = replace(openings, 'acme', 'evil') WHERE seq = 3")
    conn.close()
    with pytest.raises(AuditVerifyError, match=r"seq 3 .*does not match its commitment") as info:
        verify_log(sealed_log, keypair.public_key)
    assert info.value.seq == 3


def test_a_removed_opening_in_the_log_is_reported(sealed_log: Path, keypair: KeyPair) -> None:
    conn = sqlite3.connect(sealed_log)
    with conn:
        conn.execute("UPDATE audit_entries SET openings = '' WHERE seq = 2")
    conn.close()
    with pytest.raises(AuditVerifyError, match=r"seq 2 .*without their opening"):
        verify_log(sealed_log, keypair.public_key)


def test_an_export_can_withhold_sealed_fields_and_still_verify(
    sealed_log: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    report = export_bundle(sealed_log, out, [keypair.public_key], tenant="acme", withhold=("principal_id",))
    assert report.entries == 3  # the tenant filter reads sealed tenants through their openings
    text = (out / "entries.jsonl").read_text()
    assert "key:3f2a9c0d1e4b5a69" not in text  # withheld
    assert '\\"acme\\"' in text  # the tenant opening is kept
    assert verify_bundle(out, keypair.public_key).entries == 3
    assert json.loads((out / "manifest.json").read_text())["withheld"] == ["principal_id"]


def test_a_field_in_clear_cannot_be_withheld(db_path: Path, keypair: KeyPair, tmp_path: Path) -> None:
    with AuditLog(db_path, keypair.private_key) as log:
        log.append(make_record(1))
    with pytest.raises(AuditError, match="holds it in clear"):
        export_bundle(db_path, tmp_path / "b", [keypair.public_key], withhold=("principal_id",))
    with pytest.raises(AuditError, match="only sealable"):
        export_bundle(db_path, tmp_path / "c", [keypair.public_key], withhold=("request_id",))


def test_an_export_cannot_hide_that_it_withholds(sealed_log: Path, keypair: KeyPair, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    export_bundle(sealed_log, out, [keypair.public_key])  # nothing withheld
    lines = [json.loads(line) for line in (out / "entries.jsonl").read_text().splitlines()]
    for line in lines:
        line["openings"] = ""  # every opening dropped, the manifest still says nothing is withheld
    (out / "entries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    import hashlib

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["entries.jsonl"] = hashlib.sha256((out / "entries.jsonl").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AuditVerifyError, match="the manifest declares"):
        verify_bundle(out, keypair.public_key)


def test_a_salt_must_be_canonical() -> None:
    entry = build_entry(make_record(1), seq=1, prev="0" * 64)
    sealed, openings = seal(entry, ("tenant",), salt=lambda: bytes(16))
    assert open_sealed(sealed, openings)["tenant"] == "acme"
    bad = {"tenant": {"salt": "AAAAAAAAAAAAAAAAAAAAAB==", "value": "acme"}}  # other padding bits
    with pytest.raises(AuditError, match="bad salt"):
        open_sealed(sealed, bad)


def test_a_format_5_entry_sealed_before_model_digests_still_opens() -> None:
    entry = build_entry(make_record(), seq=1, prev=GENESIS_HASH)
    old = {k: v for k, v in entry.items() if k not in ("model_digest", "trace_id")} | {"v": 4}
    sealed, openings = seal(old, ["tenant"])
    sealed["v"] = 5  # what the log wrote before format 6
    parsed = parse_entry(encode_entry(sealed))
    assert open_sealed(parsed, openings)["tenant"] == "acme"
    with pytest.raises(AuditError, match="unexpected"):
        parse_entry(encode_entry({**sealed, "model_digest": None}))


def test_a_format_7_entry_sealed_before_trace_ids_still_opens() -> None:
    entry = build_entry(make_record(), seq=1, prev=GENESIS_HASH)
    old = {k: v for k, v in entry.items() if k != "trace_id"} | {"v": 6}
    sealed, openings = seal(old, ["tenant"])
    sealed["v"] = 7  # what the log wrote before format 8
    parsed = parse_entry(encode_entry(sealed))
    assert open_sealed(parsed, openings)["tenant"] == "acme"
    with pytest.raises(AuditError, match="unexpected"):
        parse_entry(encode_entry({**sealed, "trace_id": None}))
