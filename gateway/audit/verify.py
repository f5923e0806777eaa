"""Offline verification of an audit log file: no gateway, no private key, no writes.

:func:`verify_log` opens the SQLite file read-only and walks every entry in ``seq`` order,
checking for each one, in this order:

1. ``seq`` follows the previous row's (no gap: an entry was deleted or renumbered);
2. the stored entry hash is the SHA-256 of the body (else the body was altered);
3. the entry is signed: by a signed tree head that covers it (a checkpoint, or the log's signed
   head, whose root check below then vouches for the body), or, for entries written before
   signed heads, by its own valid Ed25519 signature over the body; an entry with neither was
   appended without the key (or the signed head was removed or replaced by an older one);
4. the body parses as a canonical entry of a known format, and sealed fields' openings match;
5. the body's ``seq`` and ``request_id`` match the row's (else rows were swapped or edited);
6. the body's ``prev`` is the previous entry's hash (the chain: catches deletion, insertion
   and reordering);
7. ``request_id`` was not logged by an earlier entry of the same phase.

It stops at the first bad entry and raises :class:`~gateway.errors.AuditVerifyError` whose
``seq`` is that entry's row ``seq`` and whose message names the request id and the reason.

Then the Merkle tree: the entries' leaves (``SHA-256(0x00 || body)``) are folded into the
RFC 9162 tree as the walk goes, and every signed checkpoint (those stored in the file, the
signed head, and any the auditor kept and passes in) must

8. be a well-formed C2SP checkpoint in a signed note whose signature verifies with one of the
   given public keys (key id per the signed-note spec, so rotated keys are told apart);
9. name the same origin as every other checkpoint (a checkpoint of another log is a replay);
10. have the root of the first ``size`` entries: otherwise an entry before it was altered,
    removed or inserted, or the log was forked (two checkpoints no single log can satisfy);
11. cover no more entries than the file holds: otherwise the log was truncated behind it.

The signed head is written with every transaction, so it covers exactly the entries in the
file; one that covers fewer is an old head put back, and the entries after it are unsigned.

A hash chain alone cannot see entries removed from the end; a checkpoint can, as far as it
covers. A checkpoint kept outside the file (``--checkpoint``) also catches the checkpoints
table itself being cut back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit import merkle
from gateway.audit.canonical import JsonValue
from gateway.audit.checkpoint import (
    SEGMENT_LINK,
    Checkpoint,
    CheckpointError,
    segment_link,
    verify_checkpoint,
)
from gateway.audit.entry import (
    GENESIS_HASH,
    decode_openings,
    entry_hash,
    open_sealed,
    parse_entry,
    verify_body_signature,
)
from gateway.audit.note import NoteError, NoteVerifier
from gateway.audit.store import HEAD_META_KEY, AuditStore, StoredEntry
from gateway.errors import AuditError, AuditVerifyError


@dataclass(frozen=True)
class VerifyReport:
    """A log that verified: how many entries, the hash of the last one (GENESIS_HASH if none),
    the Merkle root of all of them, and how many signed checkpoints (besides the signed head)
    were checked."""

    entries: int
    head_hash: str
    root: str = merkle.EMPTY_ROOT.hex()
    checkpoints: int = 0
    origin: str | None = None
    signed_head: bool = False  # the log's signed head was checked (logs before it have none)


Keys = Ed25519PublicKey | Sequence[Ed25519PublicKey]
HEAD_LABEL = "the signed head"


def _keys(public_key: Keys) -> tuple[Ed25519PublicKey, ...]:
    return (public_key,) if isinstance(public_key, Ed25519PublicKey) else tuple(public_key)


def _fail(row: StoredEntry, why: str) -> AuditVerifyError:
    return AuditVerifyError(f"audit entry seq {row.seq} (request id {row.request_id!r}): {why}", seq=row.seq)


def check_entry_alone(
    row: StoredEntry, *, public_key: Keys, withheld_allowed: bool = False, covered: bool = False
) -> dict[str, JsonValue]:
    """The checks that need no other entry: text columns, hash, signature, a well-formed body
    that agrees with its row, and the openings of its sealed fields (all of them, unless
    ``withheld_allowed``: an export may withhold some). Returns the opened entry. Pure.

    ``covered``: the caller checks this entry against the root of a signed tree head (a
    checkpoint or the signed head), so it needs no signature of its own; one it has must still
    be valid. An uncovered entry must carry a valid signature."""
    if not isinstance(row.body, str):
        raise _fail(row, f"body is stored as {type(row.body).__name__}, not text (row altered)")
    if not isinstance(row.request_id, str):
        raise _fail(row, "request id column is not text (row altered)")
    body = row.body.encode("utf-8", errors="surrogateescape")
    if entry_hash(body) != row.entry_hash:
        raise _fail(row, "hash mismatch: the body does not hash to the stored entry hash (body altered)")
    if covered and row.signature == "":
        pass  # vouched for by the signed tree head's root
    elif row.signature == "":
        raise _fail(
            row,
            "not signed: no signed checkpoint or signed head covers it (appended without the key,"
            " or the signed head was removed or replaced by an older one)",
        )
    elif not isinstance(row.signature, str) or not any(
        verify_body_signature(key, body, row.signature) for key in _keys(public_key)
    ):
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
    try:
        opened = open_sealed(entry, decode_openings(row.openings))
    except AuditError as exc:
        raise _fail(row, f"sealed fields: {exc}") from exc
    if not withheld_allowed and "withheld" in opened:
        raise _fail(row, f"sealed fields without their opening: {', '.join(map(str, opened['withheld']))}")  # type: ignore[arg-type]
    return opened


def check_entry(
    row: StoredEntry, *, expected_seq: int, prev_hash: str, public_key: Keys, covered: bool = False
) -> None:
    """Check one stored row against its expected position; raise AuditVerifyError if bad. Pure."""
    if isinstance(row.seq, bool) or not isinstance(row.seq, int) or row.seq != expected_seq:
        if isinstance(row.seq, int) and row.seq > expected_seq:
            why = f"seq gap: expected seq {expected_seq}, found {row.seq} (entries deleted)"
        else:
            why = f"seq out of order: expected seq {expected_seq}, found {row.seq!r}"
        raise _fail(row, why)
    entry = check_entry_alone(row, public_key=public_key, covered=covered)
    if entry["prev"] != prev_hash:
        raise _fail(
            row,
            "chain broken: prev does not match the previous entry's hash "
            "(an entry before it was deleted, inserted or reordered)",
        )


def open_checkpoint(note_text: str, public_key: Keys, *, origin: str | None = None) -> Checkpoint:
    """A signed checkpoint, verified with one of the keys (its name is the checkpoint's origin).

    Raises AuditVerifyError (NoteError, CheckpointError) if it is malformed, signed by none of
    the keys, or (when ``origin`` is given) for another log."""
    first_line = note_text.split("\n", 1)[0]
    if origin is not None and first_line != origin:
        raise CheckpointError(
            f"checkpoint is for origin {first_line[:80]!r}, this log's is {origin!r}"
            " (a checkpoint of another log)"
        )
    claimed = origin if origin is not None else first_line
    verifiers = []
    for key in _keys(public_key):
        try:
            verifiers.append(NoteVerifier(claimed, key))
        except NoteError as exc:
            raise CheckpointError(
                f"checkpoint origin {claimed[:80]!r} is not a valid key name: {exc}"
            ) from exc
    return verify_checkpoint(note_text, verifiers, origin=claimed)


def verify_log(
    db_path: Path,
    public_key: Keys,
    *,
    checkpoints: Sequence[str] = (),
    previous_segment: Path | None = None,
) -> VerifyReport:
    """Verify the whole log at ``db_path`` read-only; see the module docstring for what is checked.

    ``public_key``: one key, or several (rotation: entries and checkpoints signed by any of
    them verify). ``checkpoints``: signed checkpoint notes kept outside the file, checked like
    the stored ones. ``previous_segment``: the archived segment this log continues
    (``segment.py``): it must verify, and its last checkpoint must be the one this log's
    checkpoints commit to. Raises AuditVerifyError naming the first bad entry or checkpoint,
    or AuditError when the file cannot be opened or read as an audit store at all.
    """
    prev_hash = GENESIS_HASH
    count = 0
    seen: set[tuple[str, str]] = set()
    tree = merkle.CompactRange()
    with AuditStore.open_readonly(Path(db_path)) as store, store.snapshot():
        # One snapshot: entries committed while we read are not half-seen (unsigned, uncovered).
        notes = [(f"stored checkpoint at size {size}", note) for size, note, _ in store.checkpoints()]
        head_note = store.meta(HEAD_META_KEY)
        if head_note is not None:
            notes.append((HEAD_LABEL, head_note))
        notes += [(f"given checkpoint #{i + 1}", note) for i, note in enumerate(checkpoints)]
        by_size, origin, bad = _open_checkpoints(notes, public_key)
        covered = max(by_size, default=0)  # entries up to here are vouched for by a signed root
        previous_note = store.meta("previous_segment")
        stored_leaves = _StoredLeaves(store.iter_leaves())
        for row in store.iter_entries():
            if bad and count >= covered and row.signature == "":
                raise bad[0]  # unsigned because the head or checkpoint that would cover it is bad
            expected = count + 1
            check_entry(
                row,
                expected_seq=expected,
                prev_hash=prev_hash,
                public_key=public_key,
                covered=count < covered,
            )
            if (row.request_id, row.phase) in seen:
                raise _fail(row, "duplicate request id: already logged by an earlier entry of this phase")
            seen.add((row.request_id, row.phase))
            prev_hash = row.entry_hash
            leaf = merkle.leaf_hash(row.body.encode("utf-8", errors="surrogateescape"))
            if stored_leaves.get(count) not in (None, leaf):
                # Not evidence by itself (the tree table is a cache), but it names the entry that
                # a root mismatch below, or the next entry's broken chain, would only bound.
                raise _fail(
                    row,
                    "does not match its leaf in the log's stored Merkle tree: the entry was altered"
                    " (and its hash recomputed) after it was written, or the tree table was",
                )
            count += 1
            tree.append(leaf)
            for label, cp in by_size.get(count, ()):
                if cp.root_hash != tree.root():
                    raise AuditVerifyError(
                        f"{label}: the first {count} entries do not have its root (an entry up to seq"
                        f" {count} was altered, removed or inserted, or the log was forked)",
                        seq=count,
                    )
    if bad:  # the entries are fine; a checkpoint is not
        raise bad[0]
    heads = [size for size, cps in by_size.items() for label, _ in cps if label == HEAD_LABEL]
    if heads and heads[0] < count:  # the entries after it are signed by the older scheme
        raise AuditVerifyError(
            f"{HEAD_LABEL}: it covers {heads[0]} entries but the log holds {count}, which were"
            " signed one by one (an older head put back over a newer one)",
            seq=heads[0] + 1,
        )
    _check_segment_link(by_size, previous_note, public_key, previous_segment)
    beyond = sorted(size for size in by_size if size > count)
    if beyond:
        label = by_size[beyond[-1]][0][0]
        raise AuditVerifyError(
            f"{label}: it covers {beyond[-1]} entries but the log holds {count}"
            " (entries were removed from the end: truncated behind a signed checkpoint)",
            seq=count + 1,
        )
    return VerifyReport(
        entries=count,
        head_hash=prev_hash,
        root=tree.root().hex(),
        checkpoints=sum(1 for cps in by_size.values() for label, _ in cps if label != HEAD_LABEL),
        signed_head=bool(heads),
        origin=origin,
    )


class _StoredLeaves:
    """Stored leaves ``(index, hash)`` in index order, looked up by increasing index."""

    def __init__(self, leaves: Iterator[tuple[int, bytes]]) -> None:
        self._leaves = leaves
        self._next: tuple[int, bytes] | None = next(leaves, None)

    def get(self, index: int) -> bytes | None:
        while self._next is not None and self._next[0] < index:
            self._next = next(self._leaves, None)
        if self._next is not None and self._next[0] == index:
            return self._next[1]
        return None


def _check_segment_link(
    by_size: dict[int, list[tuple[str, Checkpoint]]],
    previous_note: str | None,
    public_key: Keys,
    previous_segment: Path | None,
) -> None:
    """A continued log (a segment after the first): its checkpoints all commit to the previous
    segment's last checkpoint, which is kept in its metadata; given the archived segment, that
    must be its latest checkpoint, and the archived segment must verify."""
    links = {
        line
        for cps in by_size.values()
        for _, cp in cps
        for line in cp.extensions
        if line.startswith(SEGMENT_LINK)
    }
    if previous_note is None:
        if links:
            raise AuditVerifyError(
                "the checkpoints continue a previous segment, but its checkpoint is missing"
                " (metadata removed)"
            )
        if previous_segment is not None:
            raise AuditVerifyError("this log does not continue another segment")
        return
    try:
        open_checkpoint(previous_note, public_key)
    except AuditVerifyError as exc:
        raise AuditVerifyError(f"the previous segment's checkpoint: {exc}") from exc
    expected = segment_link(previous_note)
    for cps in by_size.values():
        for label, cp in cps:
            if expected not in cp.extensions:
                raise AuditVerifyError(f"{label}: does not commit to the previous segment's last checkpoint")
    if previous_segment is not None:
        verify_log(previous_segment, public_key)
        with AuditStore.open_readonly(previous_segment) as old:
            latest = old.latest_checkpoint()
        if latest is None or latest[1] != previous_note:
            raise AuditVerifyError(
                f"{previous_segment}: its last checkpoint is not the one this log continues (another segment)"
            )


def _open_checkpoints(
    notes: list[tuple[str, str]], public_key: Keys
) -> tuple[dict[int, list[tuple[str, Checkpoint]]], str | None, list[AuditVerifyError]]:
    """Every note that verifies, by tree size, all of one origin (the first one's); and the
    errors of those that do not (reported after the entries, which are checked first)."""
    by_size: dict[int, list[tuple[str, Checkpoint]]] = {}
    origin: str | None = None
    bad: list[AuditVerifyError] = []
    for label, text in notes:
        if not isinstance(text, str):
            bad.append(AuditVerifyError(f"{label}: not text (row altered)"))
            continue
        try:
            cp = open_checkpoint(text, public_key, origin=origin)
        except AuditVerifyError as exc:
            bad.append(AuditVerifyError(f"{label}: {exc}"))
            continue
        origin = cp.origin
        by_size.setdefault(cp.size, []).append((label, cp))
    return by_size, origin, bad
