"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys, pure.

A signed note is a UTF-8 text ending in a newline, a blank line, then one or more signature
lines, each an em dash (U+2014), a space, the key name, a space and
``base64(4-byte big-endian key id || Ed25519 signature over the text)``::

   If you think cryptography is the answer to your problem,
   then you don't know what your problem is.

   — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=

The key id is ``SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]``. Key strings are those
of the reference implementation, golang.org/x/mod/sumdb/note:

    verifier key   <name>+<8 hex key id>+base64(0x01 || public key)
    signer key     PRIVATE+KEY+<name>+<8 hex key id>+base64(0x01 || private seed)   (a secret)

:func:`open` follows Go's ``note.Open``: a signature by an unknown (name, key id) is kept as
unverified and otherwise ignored (this is what lets keys rotate and witnesses cosign); a
signature by a known key that fails to verify rejects the whole note; a note with no verified
signature is rejected; more than 100 signature lines is malformed. Where it differs from Go, it
refuses what no honest signer writes: a second signature by the same known key (Go skips it
unverified; the spec says every known-key signature is verified), non-canonical base64, a key
name with a control character, two *different* verifier keys with one name and key id (refused
up front; Go only when a signature names them; the same key passed twice is simply one key).
:func:`sign` refuses a text that :func:`open` would refuse (Go's ``Sign`` checks only the final
newline) and a signer list that is empty or names one key twice.

Errors (messages never carry private key material)::

    AuditVerifyError
    └── NoteError    malformed note or key string, no verified signature, a bad signature
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import AuditVerifyError

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # Go's cap; the spec asks verifiers to accept at least 16
SIGNATURE_PREFIX = "\u2014 "  # em dash, space

# Go's unicode.IsSpace: the Unicode White_Space property.
_WHITE_SPACE = frozenset(
    (
        *range(0x09, 0x0E),
        0x20,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    )
)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII control characters other than newline
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class NoteError(AuditVerifyError):
    """A signed note or a note key string is malformed, unverified or badly signed."""


def is_valid_key_name(name: str) -> bool:
    """A key name is non-empty UTF-8 with no Unicode space, no ``+`` and no control character."""
    return (
        isinstance(name, str)
        and name != ""
        and "+" not in name
        and not any(ord(c) in _WHITE_SPACE or ord(c) < 0x20 for c in name)
        and _encodes(name)
    )


def _encodes(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _show(s: str, limit: int = 80) -> str:
    """Untrusted text for an error message: quoted and cut short."""
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _key_hash(name: str, encoded_key: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + encoded_key).digest()
    return int.from_bytes(digest[:4], "big")


def key_id(name: str, public_key: Ed25519PublicKey) -> int:
    """The signed-note key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return _key_hash(name, bytes([ALG_ED25519]) + public_key.public_bytes_raw())


def b64decode_canonical(text: str) -> bytes | None:
    """Decode standard, padded base64; None unless ``text`` is the one encoding of its bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def _parse_key_string_tail(rest: str, what: str) -> tuple[str, int, bytes]:
    """Split ``<name>+<hex8>+<base64 key>`` (Go's chop at the first two ``+``)."""
    name, _, rest = rest.partition("+")
    hash16, _, key64 = rest.partition("+")
    if not is_valid_key_name(name):
        raise NoteError(f"malformed {what}: the key name is empty or has a space, '+' or control character")
    if not _HEX8.fullmatch(hash16):
        raise NoteError(f"malformed {what}: the key id is not 8 hex digits")
    key = b64decode_canonical(key64)
    if not key:
        raise NoteError(f"malformed {what}: the key is not base64")
    if key[0] != ALG_ED25519:
        raise NoteError(f"{what} has unknown algorithm {key[0]}; only Ed25519 ({ALG_ED25519}) is supported")
    if len(key) != 33:
        raise NoteError(f"malformed {what}: an Ed25519 key is 32 bytes, not {len(key) - 1}")
    return name, int(hash16, 16), key[1:]


class NoteVerifier:
    """An Ed25519 public key and the key name it signs notes under."""

    __slots__ = ("_key_id", "_name", "_public_key", "_raw")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if not is_valid_key_name(name):
            raise NoteError(f"invalid key name {_show(name)}: it must be non-empty, without spaces or '+'")
        if not isinstance(public_key, Ed25519PublicKey):
            raise NoteError("a note verifier needs an Ed25519 public key")
        self._name = name
        self._public_key = public_key
        self._raw = public_key.public_bytes_raw()
        self._key_id = key_id(name, public_key)

    @classmethod
    def from_key_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>``; the key id must match."""
        if not isinstance(vkey, str):
            raise NoteError("a verifier key string must be a str")
        name, kid, raw = _parse_key_string_tail(vkey, "verifier key")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw))
        if verifier.key_id != kid:
            raise NoteError(f"verifier key for {name!r}: key id {kid:08x} does not match the key")
        return verifier

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    def verifier_key_string(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._raw).decode("ascii")
        return f"{self._name}+{self._key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key id) is this key's signature of ``message``."""
        try:
            self._public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoteVerifier):
            return NotImplemented
        return (self._name, self._raw) == (other._name, other._raw)

    def __hash__(self) -> int:
        return hash((self._name, self._raw))

    def __repr__(self) -> str:
        return f"NoteVerifier({self._name!r}, key_id={self._key_id:08x})"


class NoteSigner:
    """An Ed25519 private key and the key name it signs notes under. Its repr shows no key."""

    __slots__ = ("_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise NoteError("a note signer needs an Ed25519 private key")
        self._private_key = private_key
        self._verifier = NoteVerifier(name, private_key.public_key())

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key_string(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``; the id must match."""
        if not isinstance(skey, str):
            raise NoteError("a signer key string must be a str")
        priv1, _, rest = skey.partition("+")
        priv2, _, rest = rest.partition("+")
        if (priv1, priv2) != ("PRIVATE", "KEY"):
            raise NoteError("malformed signer key: it does not start with PRIVATE+KEY+")
        name, kid, seed = _parse_key_string_tail(rest, "signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_id != kid:
            raise NoteError("signer key: its key id does not match the key")
        return signer

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    def verifier(self) -> NoteVerifier:
        return self._verifier

    def verifier_key_string(self) -> str:
        return self._verifier.verifier_key_string()

    def signer_key_string(self) -> str:
        """The secret signer key string; whoever holds it can sign as this key."""
        seed = base64.b64encode(bytes([ALG_ED25519]) + self._private_key.private_bytes_raw()).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{seed}"

    def sign(self, message: bytes) -> bytes:
        """The raw Ed25519 signature of ``message`` (without the key id)."""
        return self._private_key.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key id and ``base64(key id || signature)``."""

    name: str
    key_id: int
    base64: str

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures verified, and those by keys not supplied."""

    text: str
    sigs: tuple[Signature, ...]
    unverified_sigs: tuple[Signature, ...] = ()


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise NoteError("note text must be a str")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if not _encodes(text):
        raise NoteError("note text is not valid UTF-8 (it holds a lone surrogate)")
    if _CONTROL.search(text):
        raise NoteError("note text holds an ASCII control character other than newline")
    return text


def sign(text: str, signers: Iterable[NoteSigner]) -> bytes:
    """The signed note: ``text`` (ending in a newline), a blank line, one line per signer."""
    message = _check_text(text).encode("utf-8")
    lines: list[str] = []
    seen: set[tuple[str, int]] = set()
    for signer in signers:
        if (signer.name, signer.key_id) in seen:
            raise NoteError(f"two signers share key {signer.name}+{signer.key_id:08x}")
        seen.add((signer.name, signer.key_id))
        raw = signer.key_id.to_bytes(4, "big") + signer.sign(message)
        lines.append(Signature(signer.name, signer.key_id, base64.b64encode(raw).decode("ascii")).line())
    if not lines:
        raise NoteError("a note needs at least one signer")
    return (text + "\n" + "".join(lines)).encode("utf-8")


def _index(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, int], NoteVerifier]:
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        if not isinstance(verifier, NoteVerifier):
            raise TypeError(f"expected NoteVerifier, got {type(verifier).__name__}")
        kept = known.setdefault((verifier.name, verifier.key_id), verifier)
        if kept != verifier:
            raise NoteError(
                f"ambiguous verifiers: two different keys are named {verifier.name!r} "
                f"with key id {verifier.key_id:08x}; remove one"
            )
    return known


def _decode(msg: bytes | str) -> str:
    if isinstance(msg, str):
        if not _encodes(msg):
            raise NoteError("malformed note: not valid UTF-8 (it holds a lone surrogate)")
        return msg
    if not isinstance(msg, bytes):
        raise NoteError("a note must be bytes or str")
    try:
        return msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"malformed note: not valid UTF-8 at byte {exc.start}") from exc


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"malformed note: signature line {_show(line)} does not start with an em dash")
    name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not is_valid_key_name(name):
        raise NoteError(f"malformed note: bad key name in signature line {_show(line)}")
    raw = b64decode_canonical(b64)
    if raw is None or len(raw) < 5:
        raise NoteError(f"malformed note: signature for {_show(name)} is not base64 of key id and signature")
    return Signature(name, int.from_bytes(raw[:4], "big"), b64)


def open(msg: bytes | str, verifiers: Iterable[NoteVerifier]) -> Note:  # named after Go's note.Open
    """Parse a signed note and check every signature by a key in ``verifiers``.

    Raises :class:`NoteError` when the note is malformed, when a known key's signature does not
    verify (or appears twice), or when no known key signed it.
    """
    known = _index(verifiers)
    whole = _decode(msg)
    if _CONTROL.search(whole):
        raise NoteError("malformed note: it holds an ASCII control character other than newline")
    split = whole.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = whole[: split + 1], whole[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("malformed note: the signature block is empty or lacks its final newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: {len(lines)} signatures, more than {MAX_SIGNATURES}")

    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen_known: set[tuple[str, int]] = set()
    seen_unknown: set[str] = set()
    for line in lines:
        sig = _parse_signature_line(line)
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            if line not in seen_unknown:  # Go drops repeated identical unknown signatures
                seen_unknown.add(line)
                unverified.append(sig)
            continue
        key = f"{sig.name}+{sig.key_id:08x}"
        if (sig.name, sig.key_id) in seen_known:
            raise NoteError(f"note has two signatures by key {key}")
        seen_known.add((sig.name, sig.key_id))
        if not verifier.verify(message, base64.b64decode(sig.base64)[4:]):
            raise NoteError(f"invalid signature for key {key}")
        verified.append(sig)
    if not verified:
        by = ", ".join(f"{_show(s.name, 40)}+{s.key_id:08x}" for s in unverified[:5])
        raise NoteError(f"note has no signature by a known key (signed by: {by})")
    return Note(text, tuple(verified), tuple(unverified))
