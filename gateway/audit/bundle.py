"""Compliance export: a self-contained bundle of audit entries that verifies offline.

``export_bundle`` writes a directory::

    manifest.json       format, origin, filters, counts, and the SHA-256 of every other file
    entries.jsonl       one entry per line: seq, request id, phase, the body exactly as signed,
                        its hash and signature, and its inclusion proof against checkpoint.txt
    checkpoint.txt      the signed checkpoint (C2SP signed note) every proof is against
    checkpoints.jsonl   the log's earlier checkpoints, each with a consistency proof to it
    public_keys/        the audit public key(s), PEM (for convenience: trust comes from a key
                        the auditor already holds)

``verify_bundle`` needs only that directory and the public key: the checkpoint's signature,
each entry's hash, signature, body and inclusion proof, every earlier checkpoint's signature
and consistency proof, and, for an export without a tenant filter, that the entries are
contiguous (no entry of the range left out). It reports the first bad entry. Entries newer
than the log's latest checkpoint cannot be proved yet and are left out of an export (the
manifest says how many).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.entry import SEALABLE_FIELDS, decode_openings, encode_openings, entry_view
from gateway.audit.keys import key_fingerprint
from gateway.audit.store import AuditStore, StoredEntry
from gateway.audit.verify import Keys, _keys, check_entry_alone, open_checkpoint
from gateway.errors import AuditError, AuditVerifyError

FORMAT = "llmos-audit-bundle/1"
FILES = ("entries.jsonl", "checkpoint.txt", "checkpoints.jsonl")


@dataclass(frozen=True)
class ExportReport:
    entries: int
    checkpoint_size: int
    left_out_unproved: int  # matching entries newer than the latest checkpoint


@dataclass(frozen=True)
class BundleReport:
    entries: int
    checkpoint_size: int
    checkpoints: int
    origin: str
    contiguous: bool


def _b64(values: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(v).decode("ascii") for v in values]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _matches(row: StoredEntry, since: str | None, until: str | None, tenant: str | None) -> bool:
    entry = entry_view(row.body, row.openings)
    when = str(entry.get("time", ""))
    if since is not None and when < since:
        return False
    if until is not None and when >= until:
        return False
    return tenant is None or entry.get("tenant") == tenant


def export_bundle(
    db_path: Path,
    out: Path,
    public_keys: Sequence[Ed25519PublicKey],
    *,
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    withhold: Sequence[str] = (),
) -> ExportReport:
    """Write the bundle for entries with ``since <= time < until`` (ISO 8601 UTC, compared as
    the log writes them) of ``tenant`` (all tenants when None) into the new directory ``out``.

    ``withhold``: sealed fields whose openings are left out (the entries still verify). A field
    that an exported entry holds in clear cannot be withheld: AuditError, nothing written."""
    for field in withhold:
        if field not in SEALABLE_FIELDS:
            raise AuditError(
                f"cannot withhold {field!r}: only sealable fields ({', '.join(SEALABLE_FIELDS)})"
            )
    if out.exists() and any(out.iterdir()):
        raise AuditError(f"{out}: the export directory exists and is not empty")
    with AuditStore.open_readonly(db_path) as store:
        latest = store.latest_checkpoint()
        if latest is None:
            raise AuditError(f"{db_path}: the log has no signed checkpoint yet: nothing can be proved")
        size, note, _ = latest
        cp = open_checkpoint(note, public_keys)

        def subtree(start: int, end: int) -> bytes:
            width = end - start
            value = store.node(width.bit_length() - 1, start // width)
            if value is None:
                raise AuditError(f"{db_path}: Merkle node for leaves [{start}, {end}) is missing")
            return value

        out.mkdir(parents=True, exist_ok=True)
        count = left_out = 0
        with (out / "entries.jsonl").open("w", encoding="utf-8") as f:
            for row in store.iter_entries():
                if not _matches(row, since, until, tenant):
                    continue
                if row.seq > size:
                    left_out += 1
                    continue
                openings = decode_openings(row.openings)
                clear = [f for f in withhold if f not in openings]
                if clear:
                    raise AuditError(
                        f"cannot withhold {', '.join(clear)}: entry seq {row.seq} holds it in clear"
                        " (only fields sealed when written, audit.sealed_fields, can be withheld)"
                    )
                kept = {f: v for f, v in openings.items() if f not in withhold}
                line = {
                    "seq": row.seq,
                    "request_id": row.request_id,
                    "phase": row.phase,
                    "body": row.body,
                    "entry_hash": row.entry_hash,
                    "signature": row.signature,
                    "openings": encode_openings(kept),
                    "leaf_index": row.seq - 1,
                    "inclusion_proof": _b64(merkle.inclusion_proof(row.seq - 1, size, subtree)),
                }
                f.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        (out / "checkpoint.txt").write_text(note, encoding="utf-8")
        with (out / "checkpoints.jsonl").open("w", encoding="utf-8") as f:
            for old_size, old_note, created in store.checkpoints():
                if old_size >= size:
                    continue
                proof = merkle.consistency_proof(old_size, size, subtree)
                f.write(
                    json.dumps(
                        {"size": old_size, "note": old_note, "created": created, "consistency": _b64(proof)}
                    )
                    + "\n"
                )
    keys_dir = out / "public_keys"
    keys_dir.mkdir()
    for key in public_keys:
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (keys_dir / f"{key_fingerprint(key)[:16]}.pem").write_bytes(pem)
    manifest = {
        "format": FORMAT,
        "origin": cp.origin,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "filters": {"since": since, "until": until, "tenant": tenant},
        "withheld": sorted(withhold),
        "entries": count,
        "checkpoint_size": size,
        "left_out_unproved": left_out,
        "files": {name: _sha256_file(out / name) for name in FILES},
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return ExportReport(count, size, left_out)


def bundle_keys(bundle: Path) -> list[Ed25519PublicKey]:
    """The public keys shipped in the bundle (to be compared with ones the auditor trusts)."""
    keys = []
    for path in sorted((bundle / "public_keys").glob("*.pem")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            keys.append(key)
    return keys


def _lines(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise AuditVerifyError(f"{path.name} line {number}: not JSON ({exc.msg})") from exc
            if not isinstance(value, dict):
                raise AuditVerifyError(f"{path.name} line {number}: not a JSON object")
            yield number, value


def _proof(value: object, where: str) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuditVerifyError(f"{where}: the proof is not a list of base64 strings")
    try:
        return [base64.b64decode(v, validate=True) for v in value]
    except (binascii.Error, ValueError) as exc:
        raise AuditVerifyError(f"{where}: the proof is not base64") from exc


def verify_bundle(bundle: Path, public_key: Keys) -> BundleReport:
    """Verify an export bundle offline; AuditVerifyError names the first bad entry or file."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        note = (bundle / "checkpoint.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditVerifyError(f"{bundle}: not a readable audit bundle ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AuditVerifyError(f"{bundle}: manifest.json is not a {FORMAT} manifest")
    files = manifest.get("files")
    for name in FILES:
        if not isinstance(files, dict) or files.get(name) != _sha256_file(bundle / name):
            raise AuditVerifyError(f"{bundle}: {name} does not match the manifest (file altered or replaced)")
    try:
        cp: Checkpoint = open_checkpoint(note, public_key)
    except AuditVerifyError as exc:
        raise AuditVerifyError(f"checkpoint.txt: {exc}") from exc
    keys = _keys(public_key)
    previous: int | None = None
    contiguous = True
    count = 0
    seen: set[tuple[str, str]] = set()
    for number, line in _lines(bundle / "entries.jsonl"):
        where = f"entries.jsonl line {number}"
        seq = line.get("seq")
        if type(seq) is not int or not 1 <= seq <= cp.size:
            raise AuditVerifyError(f"{where}: seq {seq!r} is not within the checkpoint's {cp.size} entries")
        where = f"entry seq {seq} ({where})"
        if previous is not None and seq <= previous:
            raise AuditVerifyError(f"{where}: entries out of order or repeated", seq=seq)
        if previous is not None and seq != previous + 1:
            contiguous = False
        previous = seq
        row = StoredEntry(
            seq=seq,
            request_id=line.get("request_id"),  # type: ignore[arg-type]
            body=line.get("body"),  # type: ignore[arg-type]
            entry_hash=line.get("entry_hash"),  # type: ignore[arg-type]
            signature=line.get("signature"),  # type: ignore[arg-type]
            phase=line.get("phase"),  # type: ignore[arg-type]
            openings=line.get("openings", ""),  # type: ignore[arg-type]
        )
        check_entry_alone(row, public_key=keys, withheld_allowed=True)
        if line.get("leaf_index") != seq - 1:
            raise AuditVerifyError(f"{where}: leaf index is not seq - 1", seq=seq)
        body = row.body.encode("utf-8", errors="surrogateescape")
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(body),
                seq - 1,
                cp.size,
                _proof(line.get("inclusion_proof"), where),
                cp.root_hash,
            )
        except merkle.MerkleProofError as exc:
            raise AuditVerifyError(
                f"{where}: not in the signed checkpoint's tree ({exc}): entry altered or forged", seq=seq
            ) from exc
        if (row.request_id, row.phase) in seen:
            raise AuditVerifyError(f"{where}: duplicate request id", seq=seq)
        seen.add((row.request_id, row.phase))
        count += 1
    if manifest.get("entries") != count:
        raise AuditVerifyError(
            f"{bundle}: the manifest lists {manifest.get('entries')!r} entries, entries.jsonl holds {count}"
        )
    filters = manifest.get("filters") if isinstance(manifest.get("filters"), dict) else {}
    if not (filters or {}).get("tenant") and not contiguous:
        raise AuditVerifyError(f"{bundle}: entries are missing from the exported range (seq gap)")
    checkpoints = 1
    for number, line in _lines(bundle / "checkpoints.jsonl"):
        where = f"checkpoints.jsonl line {number}"
        old_note = line.get("note")
        if not isinstance(old_note, str):
            raise AuditVerifyError(f"{where}: no note")
        try:
            old = open_checkpoint(old_note, public_key, origin=cp.origin)
            merkle.verify_consistency(
                old.size, cp.size, old.root_hash, cp.root_hash, _proof(line.get("consistency"), where)
            )
        except AuditVerifyError as exc:
            raise AuditVerifyError(
                f"{where}: {exc} (an older checkpoint the log does not extend: a fork)"
            ) from exc
        checkpoints += 1
    return BundleReport(count, cp.size, checkpoints, cp.origin, contiguous)
