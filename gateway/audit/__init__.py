"""The audit seam: a signed, hash-chained, append-only audit log in SQLite.

    canonical.py   canonical JSON bytes (RFC 8785 subset), pure
    entry.py       build / hash / sign / parse one entry, pure
    merkle.py      RFC 9162 Merkle tree: hashes, proofs, verification, compact range, pure
    keys.py        Ed25519 key files (private 0600, public 0644)
    store.py       the SQLite file (WAL, synchronous=FULL): rows in seq order, no crypto
    log.py         AuditLog: the thread-safe append path the gateway calls
    verify.py      verify_log: offline, read-only verification for `llmos audit verify`

Entries are hash-chained (``prev``), signed, and the leaves of an RFC 9162 Merkle tree whose
checkpoints the log signs (C2SP tlog-checkpoint in a signed note: ``note.py``, ``checkpoint.py``).
"""

from gateway.audit.keys import generate_signing_key, load_private_key, load_public_key
from gateway.audit.log import AppendResult, AuditLog
from gateway.audit.verify import VerifyReport, verify_log

__all__ = [
    "AppendResult",
    "AuditLog",
    "VerifyReport",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "verify_log",
]
