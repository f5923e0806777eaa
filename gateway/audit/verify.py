"""Offline verification of an audit log file: no gateway, no private key, no writes.

:func:`verify_log` opens the SQLite file read-only and walks every entry in ``seq`` order,
checking for each one, in this order:

1. ``seq`` follows the previous row's (no gap: an entry was deleted or renumbered);
2. the stored entry hash is the SHA-256 of the body (else the body was altered);
3. the Ed25519 signature over the body is valid for the given public key (else the entry was
   altered and re-hashed, forged, or signed by another key);
4. the body parses as a canonical format-1 entry;
5. the body's ``seq`` and ``request_id`` match the row's (else rows were swapped or edited);
6. the body's ``prev`` is the previous entry's hash (the chain: catches deletion, insertion
   and reordering);
7. ``request_id`` was not logged by an earlier entry.

It stops at the first bad entry and raises :class:`~gateway.errors.AuditVerifyError` whose
``seq`` is that entry's row ``seq`` and whose message names the request id and the reason.

Limitation, by design of a plain hash chain: removing entries from the *end* of the log leaves a
shorter log that is still a valid chain, and new appends then continue from the shorter head.
Tail truncation is therefore not detected here. Signed checkpoints of the log head (the Merkle
tree issue) will make it detectable; until then, keep a copy of a recent
:attr:`VerifyReport.head_hash` and ``entries`` count elsewhere and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.entry import GENESIS_HASH, entry_hash, parse_entry, verify_body_signature
from gateway.audit.store import AuditStore, StoredEntry
from gateway.errors import AuditError, AuditVerifyError


@dataclass(frozen=True)
class VerifyReport:
    """A log that verified: how many entries, and the hash of the last one (GENESIS_HASH if none)."""

    entries: int
    head_hash: str


def _fail(row: StoredEntry, why: str) -> AuditVerifyError:
    return AuditVerifyError(f"audit entry seq {row.seq} (request id {row.request_id!r}): {why}", seq=row.seq)


def check_entry(row: StoredEntry, *, expected_seq: int, prev_hash: str, public_key: Ed25519PublicKey) -> None:
    """Check one stored row against its expected position; raise AuditVerifyError if bad. Pure."""
    if isinstance(row.seq, bool) or not isinstance(row.seq, int) or row.seq != expected_seq:
        if isinstance(row.seq, int) and row.seq > expected_seq:
            why = f"seq gap: expected seq {expected_seq}, found {row.seq} (entries deleted)"
        else:
            why = f"seq out of order: expected seq {expected_seq}, found {row.seq!r}"
        raise _fail(row, why)
    if not isinstance(row.body, str):
        raise _fail(row, f"body is stored as {type(row.body).__name__}, not text (row altered)")
    if not isinstance(row.request_id, str):
        raise _fail(row, "request id column is not text (row altered)")
    body = row.body.encode("utf-8", errors="surrogateescape")
    if entry_hash(body) != row.entry_hash:
        raise _fail(row, "hash mismatch: the body does not hash to the stored entry hash (body altered)")
    if not isinstance(row.signature, str) or not verify_body_signature(public_key, body, row.signature):
        raise _fail(
            row, "bad signature: not signed by this public key (entry altered or forged, or wrong key)"
        )
    try:
        entry = parse_entry(body)
    except AuditError as exc:
        raise _fail(row, f"unparseable body: {exc}") from exc
    if entry["seq"] != row.seq:
        raise _fail(
            row, f"body says seq {entry['seq']}, row is seq {row.seq} (entries swapped or renumbered)"
        )
    if entry["request_id"] != row.request_id:
        raise _fail(row, f"body says request id {entry['request_id']!r} (row edited or entries swapped)")
    if entry["phase"] != row.phase:
        raise _fail(row, f"body says phase {entry['phase']!r}, row says {row.phase!r} (row edited)")
    if entry["prev"] != prev_hash:
        raise _fail(
            row,
            "chain broken: prev does not match the previous entry's hash "
            "(an entry before it was deleted, inserted or reordered)",
        )


def verify_log(db_path: Path, public_key: Ed25519PublicKey) -> VerifyReport:
    """Verify the whole log at ``db_path`` read-only; see the module docstring for what is checked.

    Raises AuditVerifyError naming the first bad entry, or AuditError when the file cannot be
    opened or read as an audit store at all. Does not detect tail truncation (see module doc).
    """
    prev_hash = GENESIS_HASH
    count = 0
    seen: set[tuple[str, str]] = set()
    with AuditStore.open_readonly(Path(db_path)) as store:
        for row in store.iter_entries():
            check_entry(row, expected_seq=count + 1, prev_hash=prev_hash, public_key=public_key)
            if (row.request_id, row.phase) in seen:
                raise _fail(row, "duplicate request id: already logged by an earlier entry of this phase")
            seen.add((row.request_id, row.phase))
            prev_hash = row.entry_hash
            count += 1
    return VerifyReport(entries=count, head_hash=prev_hash)
