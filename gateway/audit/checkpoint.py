"""C2SP transparency-log checkpoints (https://c2sp.org/tlog-checkpoint), pure.

A checkpoint is the text of a signed note (:mod:`gateway.audit.note`); every line ends in a
newline::

    example.com/behind-the-sofa                      origin: names the log; non-empty
    20852163                                         tree size: decimal, no leading zeros
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=     root hash: base64 of the 32-byte RFC 6962 root
    <extension line>                                 zero or more, opaque, non-empty

The spec only recommends that an origin be a URL without spaces or ``+`` and tells clients not
to assume it, so any non-empty origin is accepted; like every line of a note it may not hold a
control character. Parsing is strict: the tree size must be the canonical decimal (at most
2**64 - 1, as in Go's uint64), the root hash canonical padded base64 of exactly 32 bytes, so one
checkpoint has exactly one text. Each signature line of the note carries its key id, so a log
may rotate keys: pass the old verifier alongside the new one and old checkpoints still verify.

Errors::

    AuditVerifyError
    ├── NoteError         (gateway.audit.note) the signed note is malformed or badly signed
    └── CheckpointError   the checkpoint text is malformed, or is for another origin
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.audit import note
from gateway.audit.note import NoteSigner, NoteVerifier, b64decode_canonical
from gateway.errors import AuditVerifyError

HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile(r"[\x00-\x1f]")  # lines hold no newline and no other control character


class CheckpointError(AuditVerifyError):
    """A checkpoint text is malformed, or it is for a log other than the one expected."""


def _show(s: str, limit: int = 80) -> str:
    """Untrusted text for an error message: quoted and cut short."""
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _check_line(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise CheckpointError(f"checkpoint {what} must be a str")
    if value == "":
        raise CheckpointError(f"checkpoint {what} is empty")
    if _CONTROL.search(value):
        raise CheckpointError(f"checkpoint {what} {_show(value)} holds a newline or control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"checkpoint {what} is not valid UTF-8 (it holds a lone surrogate)") from exc


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size, root hash and optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise CheckpointError("checkpoint tree size must be an int")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint tree size {self.size} is outside 0..2**64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        if isinstance(self.extensions, str | bytes):
            raise CheckpointError("checkpoint extensions must be a sequence of lines, not one string")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            _check_line(line, "extension line")

    def to_text(self) -> str:
        """The note text: one line each for origin, size, base64 root hash, then the extensions."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint text strictly; :class:`CheckpointError` says what is wrong."""
        if not isinstance(text, str):
            raise CheckpointError("a checkpoint text must be a str")
        if not text.endswith("\n"):
            raise CheckpointError("malformed checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("malformed checkpoint: it needs origin, tree size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not _SIZE.fullmatch(size_text):
            raise CheckpointError(
                f"malformed checkpoint: tree size {_show(size_text)} is not a canonical decimal"
            )
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise CheckpointError(f"malformed checkpoint: tree size {size} is more than 2**64-1")
        root = b64decode_canonical(root_text)
        if root is None:
            raise CheckpointError(
                f"malformed checkpoint: root hash {_show(root_text)} is not canonical base64"
            )
        if len(root) != HASH_SIZE:
            raise CheckpointError(f"malformed checkpoint: root hash is {len(root)} bytes, not {HASH_SIZE}")
        return cls(origin, size, root, tuple(extensions))


SEGMENT_LINK = "previous-segment sha256:"


def segment_link(previous_note: str) -> str:
    """The extension line by which a log segment's checkpoints commit to the last signed
    checkpoint of the segment before it (``gateway/audit/segment.py``)."""
    return SEGMENT_LINK + hashlib.sha256(previous_note.encode("utf-8")).hexdigest()


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> bytes:
    """The checkpoint as a signed note; its signature line carries the signer's key id."""
    return note.sign(checkpoint.to_text(), [signer])


def verify_checkpoint(msg: bytes | str, verifiers: Iterable[NoteVerifier], *, origin: str) -> Checkpoint:
    """Open a signed checkpoint with ``verifiers`` (old keys too, after a rotation) and parse it.

    Raises :class:`~gateway.audit.note.NoteError` when no known key signed it or a known key's
    signature fails, and :class:`CheckpointError` when the text is malformed or its origin is not
    ``origin`` (a checkpoint of another log, replayed).
    """
    opened = note.open(msg, verifiers)
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is for origin {_show(checkpoint.origin)}, not the expected {_show(origin)}"
        )
    return checkpoint
