"""Audit entries, pure: build one from an AuditRecord, hash it, sign it, parse it back.

An entry is a JSON object (format ``v`` 1) holding the fields of
:class:`gateway.types.AuditRecord` (``phase`` included: ``complete`` for a whole request,
``stream_start``/``stream_end`` for the two entries of a stream) plus ``seq`` (1, 2, 3, ...)
and ``prev`` (the entry hash of the previous entry, :data:`GENESIS_HASH` for the first).
Its *body* is the canonical JSON encoding (:func:`gateway.audit.canonical.canonical_json`);
the *entry hash* is the hex SHA-256 of the body and the *signature* is Ed25519 over the body.
Because the body holds ``prev``, each signature also covers the whole chain before it.

No I/O here: storage lives in ``store.py``, the append protocol in ``log.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.canonical import JsonValue, canonical_json
from gateway.errors import AuditError
from gateway.types import AUDIT_PHASES, AuditRecord

# 2: phase, policy_input, output_policy_input, obligations; 3: auth_method; 4: findings
FORMAT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)  # entries written by earlier formats still verify
GENESIS_HASH = "0" * 64

# The exact member set of a format-2 entry.
ENTRY_FIELDS_V2: frozenset[str] = frozenset(
    {
        "v",
        "seq",
        "prev",
        "request_id",
        "time",
        "principal_id",
        "tenant",
        "endpoint",
        "model",
        "decision",
        "status",
        "reasons",
        "policy_digest",
        "request_digest",
        "response_digest",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "phase",
        "policy_input",
        "output_policy_input",
        "obligations",
        "output_obligations",
    }
)
ENTRY_FIELDS_V3: frozenset[str] = ENTRY_FIELDS_V2 | {"auth_method"}
# The exact member set of a format-4 entry (what is written now).
ENTRY_FIELDS: frozenset[str] = ENTRY_FIELDS_V3 | {"findings"}
_FIELDS_BY_VERSION = {2: ENTRY_FIELDS_V2, 3: ENTRY_FIELDS_V3, 4: ENTRY_FIELDS}

_HEX64 = re.compile(r"[0-9a-f]{64}")


def is_entry_hash(value: object) -> bool:
    """True for a lowercase hex SHA-256 digest (64 characters)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def build_entry(record: AuditRecord, *, seq: int, prev: str) -> dict[str, JsonValue]:
    """The current-format entry for ``record`` at position ``seq`` chained to ``prev``."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise AuditError(f"audit entry seq must be a positive integer, got {seq!r}")
    if not is_entry_hash(prev):
        raise AuditError("audit entry prev must be a lowercase hex SHA-256 digest")
    if not isinstance(record.request_id, str) or not record.request_id:
        raise AuditError("audit record request_id must be a non-empty string")
    if record.phase not in AUDIT_PHASES:
        raise AuditError(f"audit record phase must be one of {', '.join(AUDIT_PHASES)}")
    return {
        "v": FORMAT_VERSION,
        "seq": seq,
        "prev": prev,
        "request_id": record.request_id,
        "time": record.time,
        "principal_id": record.principal_id,
        "auth_method": record.auth_method,
        "findings": record.findings,
        "tenant": record.tenant,
        "endpoint": record.endpoint,
        "model": record.model,
        "decision": record.decision,
        "status": record.status,
        "reasons": list(record.reasons),
        "policy_digest": record.policy_digest,
        "request_digest": record.request_digest,
        "response_digest": record.response_digest,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": record.latency_ms,
        "phase": record.phase,
        "policy_input": record.policy_input,
        "output_policy_input": record.output_policy_input,
        "obligations": record.obligations,
        "output_obligations": record.output_obligations,
    }


def encode_entry(entry: dict[str, JsonValue]) -> bytes:
    """The entry body: canonical JSON bytes."""
    return canonical_json(entry)


def entry_hash(body: bytes) -> str:
    """Hex SHA-256 of the body bytes."""
    return hashlib.sha256(body).hexdigest()


def sign_body(private_key: Ed25519PrivateKey, body: bytes) -> str:
    """Ed25519 signature over the body bytes, standard base64."""
    return base64.b64encode(private_key.sign(body)).decode("ascii")


def verify_body_signature(public_key: Ed25519PublicKey, body: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is a valid Ed25519 signature of ``body``."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(raw, body)
    except InvalidSignature:
        return False
    return True


def _no_duplicate_keys(pairs: list[tuple[str, JsonValue]]) -> dict[str, JsonValue]:
    result: dict[str, JsonValue] = {}
    for key, value in pairs:
        if key in result:
            raise AuditError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _refuse_float(text: str) -> JsonValue:
    raise AuditError(f"non-integer number {text}")


def parse_entry(body: bytes) -> dict[str, JsonValue]:
    """Parse an entry body; raise AuditError saying why it is not a well-formed entry."""
    try:
        value = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditError(f"body is not JSON: {exc}") from exc
    except AuditError as exc:
        raise AuditError(f"body is not canonical JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise AuditError("body is not a JSON object")
    version = value.get("v")
    if isinstance(version, bool) or version not in _FIELDS_BY_VERSION:
        raise AuditError(f"unsupported entry format v={version!r} (expected one of {READABLE_VERSIONS})")
    fields = _FIELDS_BY_VERSION[version]
    missing = fields - value.keys()
    extra = value.keys() - fields
    if missing or extra:
        raise AuditError(f"entry fields wrong: missing {sorted(missing)}, unexpected {sorted(extra)}")
    seq = value["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise AuditError(f"entry seq {seq!r} is not a positive integer")
    if not is_entry_hash(value["prev"]):
        raise AuditError("entry prev is not a lowercase hex SHA-256 digest")
    if not isinstance(value["request_id"], str) or not value["request_id"]:
        raise AuditError("entry request_id is not a non-empty string")
    if version >= 3 and not isinstance(value["auth_method"], str):
        raise AuditError("entry auth_method is not a string")
    if version >= 4 and not (value["findings"] is None or isinstance(value["findings"], str)):
        raise AuditError("entry findings is neither null nor a string")
    if value["phase"] not in AUDIT_PHASES:
        raise AuditError(f"entry phase {value['phase']!r} is not one of {', '.join(AUDIT_PHASES)}")
    if canonical_json(value) != body:
        raise AuditError("body is not in canonical form")
    return value
