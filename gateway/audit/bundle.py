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
each entry's hash, signature, body, openings and inclusion proof, every earlier checkpoint's
signature and consistency proof, the unsigned manifest's claims against the signed contents,
and, for an export without a tenant filter, that the entries are contiguous. What the auditor
knows independently (the origin, the expected seq range) pins the rest. It reports the first
bad entry. Entries newer than the log's latest checkpoint cannot be proved yet and are left
out of an export (the manifest says how many).
"""

from __future__ import annotations

import base64
import binascii
import functools
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
    first_seq: int | None = None
    last_seq: int | None = None


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

        @functools.lru_cache(maxsize=1 << 16)  # consecutive entries' proofs share upper nodes
        def subtree(start: int, end: int) -> bytes:
            width = end - start
            value = store.node(width.bit_length() - 1, start // width)
            if value is None:
                raise AuditError(f"{db_path}: Merkle node for leaves [{start}, {end}) is missing")
            return value

        out.mkdir(parents=True, exist_ok=True)
        # Which entries: those that match; without a tenant filter, every entry from the first
        # to the last that matches (requests are logged when they finish, so a time range is not
        # a seq range: the span keeps the bundle contiguous, hence checkably complete inside).
        matching = [row.seq for row in store.iter_entries() if _matches(row, since, until, tenant)]
        left_out = sum(1 for seq in matching if seq > size)
        proved = [seq for seq in matching if seq <= size]
        wanted = set(proved) if tenant is not None or not proved else set(range(proved[0], proved[-1] + 1))
        count = 0
        first_seq = last_seq = None
        with (out / "entries.jsonl").open("w", encoding="utf-8") as f:
            for row in store.iter_entries():
                if row.seq not in wanted:
                    continue
                first_seq = row.seq if first_seq is None else first_seq
                last_seq = row.seq
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
        "first_seq": first_seq,
        "last_seq": last_seq,
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
        return [binascii.a2b_base64(v, strict_mode=True) for v in value]
    except (binascii.Error, ValueError) as exc:
        raise AuditVerifyError(f"{where}: the proof is not base64") from exc


def verify_bundle(
    bundle: Path, public_key: Keys, *, origin: str | None = None, expect_seq: tuple[int, int] | None = None
) -> BundleReport:
    """Verify an export bundle offline; AuditVerifyError names the first bad entry or file.

    The manifest is not signed: what it says (origin, filters, withheld fields, seq range) is
    checked against the signed contents, and ``origin``/``expect_seq``, when the auditor knows
    them, pin the log and the range independently of it."""
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
        cp: Checkpoint = open_checkpoint(note, public_key, origin=origin)
    except AuditVerifyError as exc:
        raise AuditVerifyError(f"checkpoint.txt: {exc}") from exc
    if manifest.get("origin") != cp.origin:
        raise AuditVerifyError(
            f"{bundle}: the manifest names origin {manifest.get('origin')!r}, the checkpoint {cp.origin!r}"
        )
    filters = manifest.get("filters") if isinstance(manifest.get("filters"), dict) else {}
    tenant_filter = (filters or {}).get("tenant")
    withheld_declared = manifest.get("withheld", [])
    first_seq: int | None = None
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
        # covered: the inclusion proof below ties the body to the signed checkpoint's root
        opened = check_entry_alone(row, public_key=keys, withheld_allowed=True, covered=True)
        if opened.get("withheld", []) != withheld_declared:
            raise AuditVerifyError(
                f"{where}: withholds {opened.get('withheld', [])}, the manifest declares {withheld_declared}",
                seq=seq,
            )
        if tenant_filter is not None and "tenant" in opened and opened["tenant"] != tenant_filter:
            raise AuditVerifyError(
                f"{where}: not of tenant {tenant_filter!r}, which the export is for", seq=seq
            )
        first_seq = seq if first_seq is None else first_seq
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
    if tenant_filter is None and not contiguous:
        raise AuditVerifyError(f"{bundle}: entries are missing from the exported range (seq gap)")
    if (manifest.get("first_seq"), manifest.get("last_seq")) != (first_seq, previous):
        raise AuditVerifyError(
            f"{bundle}: the manifest's seq range {manifest.get('first_seq')}-{manifest.get('last_seq')}"
            f" is not the entries' {first_seq}-{previous} (entries removed at an end)"
        )
    if expect_seq is not None and (first_seq, previous) != expect_seq:
        raise AuditVerifyError(
            f"{bundle}: holds entries {first_seq}-{previous}, expected {expect_seq[0]}-{expect_seq[1]}"
        )
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
    return BundleReport(count, cp.size, checkpoints, cp.origin, contiguous, first_seq, previous)
