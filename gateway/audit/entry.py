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
import bisect
import hashlib
import json
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.canonical import MAX_SAFE_INTEGER, JsonValue, canonical_json
from gateway.errors import AuditError
from gateway.types import AUDIT_PHASES, AuditRecord

# 2: phase, policy_input, output_policy_input, obligations; 3: auth_method; 4: findings;
# 6: model_digest (the signed manifest of the model that served the request); 8: trace_id (the
# OpenTelemetry trace of the request, null when tracing is off)
FORMAT_VERSION = 8
# Entries written by earlier formats still verify; 5, 7 and 9: 4, 6 and 8 with sealed fields.
READABLE_VERSIONS = (2, 3, 4, 5, 6, 7, 8, 9)
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
ENTRY_FIELDS_V4: frozenset[str] = ENTRY_FIELDS_V3 | {"findings"}
ENTRY_FIELDS_V6: frozenset[str] = ENTRY_FIELDS_V4 | {"model_digest"}
# The exact member set of a format-8 entry (what is written now).
ENTRY_FIELDS: frozenset[str] = ENTRY_FIELDS_V6 | {"trace_id"}
_FIELDS_BY_VERSION = {
    2: ENTRY_FIELDS_V2,
    3: ENTRY_FIELDS_V3,
    4: ENTRY_FIELDS_V4,
    6: ENTRY_FIELDS_V6,
    8: ENTRY_FIELDS,
}

# Formats 5 and 7 are formats 4 and 6 with some fields *sealed*: each is replaced in the body by
# a salted commitment under "sealed", and its value and salt (the *opening*) are stored beside
# the entry, outside the signed and hashed bytes. An export can then leave an opening out
# (withhold the field) and the entry still verifies; a given opening is checked against its
# commitment. 7 is what is written now.
SEALED_VERSION = 9
_SEALED_BASE = {5: ENTRY_FIELDS_V4, 7: ENTRY_FIELDS_V6, 9: ENTRY_FIELDS}
SEALABLE_FIELDS: tuple[str, ...] = (
    "principal_id",
    "tenant",
    "auth_method",
    "model",
    "reasons",
    "findings",
    "request_digest",
    "response_digest",
    "policy_input",
    "output_policy_input",
    "obligations",
    "output_obligations",
)
_COMMITMENT = re.compile(r"sha256:[0-9a-f]{64}")
SALT_BYTES = 16

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


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
        "model_digest": record.model_digest,
        "trace_id": record.trace_id,
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


def _commit(field: str, salt: bytes, value: JsonValue) -> str:
    material = salt + canonical_json({"field": field, "value": value})
    return "sha256:" + hashlib.sha256(material).hexdigest()


def seal(
    entry: dict[str, JsonValue],
    fields: Sequence[str],
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> tuple[dict[str, JsonValue], dict[str, JsonValue]]:
    """The format-5 entry with ``fields`` sealed, and their openings ``{field: {salt, value}}``.

    The commitment is ``sha256:`` hex of SHA-256(salt || canonical {"field", "value"}): the
    salt keeps a guessable value (a tenant name) from being confirmed by hashing guesses; the
    field name keeps a commitment from being moved to another field."""
    if not fields:
        return entry, {}
    sealed: dict[str, JsonValue] = {}
    openings: dict[str, JsonValue] = {}
    out = dict(entry)
    for field in fields:
        if field not in SEALABLE_FIELDS:
            raise AuditError(
                f"audit field {field!r} cannot be sealed (sealable: {', '.join(SEALABLE_FIELDS)})"
            )
        value = out.pop(field)
        grain = salt()
        sealed[field] = _commit(field, grain, value)
        openings[field] = {"salt": base64.b64encode(grain).decode("ascii"), "value": value}
    out["v"] = SEALED_VERSION
    out["sealed"] = sealed
    return out, openings


def encode_openings(openings: dict[str, JsonValue]) -> str:
    """Openings as stored beside the entry: canonical JSON text, "" when nothing is sealed."""
    return canonical_json(openings).decode("utf-8") if openings else ""


def decode_openings(text: object) -> dict[str, JsonValue]:
    if text in ("", None):
        return {}
    if not isinstance(text, str):
        raise AuditError("openings are not text")
    try:
        value = json.loads(text, parse_float=_refuse_float, parse_constant=_refuse_float)
    except json.JSONDecodeError as exc:
        raise AuditError(f"openings are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise AuditError("openings are not a JSON object")
    return value


def open_sealed(entry: dict[str, JsonValue], openings: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The entry with the given openings put back after checking each against its commitment.

    Sealed fields without an opening are withheld: absent from the result and listed under
    ``"withheld"``. Raises AuditError for an opening that does not match (altered) or that
    opens no sealed field. A format 2-4 entry (nothing sealed) takes no openings."""
    sealed = entry.get("sealed")
    if not isinstance(sealed, dict):
        if openings:
            raise AuditError("openings given for an entry with no sealed fields")
        return entry
    out = {k: v for k, v in entry.items() if k != "sealed"}
    for field in openings:
        if field not in sealed:
            raise AuditError(f"an opening for {field!r}, which this entry does not seal")
    withheld = []
    for field, commitment in sealed.items():
        opening = openings.get(field)
        if opening is None:
            withheld.append(field)
            continue
        if not isinstance(opening, dict) or set(opening) != {"salt", "value"}:
            raise AuditError(f"the opening of {field!r} is malformed")
        salt_text = opening["salt"]
        try:
            grain = base64.b64decode(str(salt_text), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuditError(f"the opening of {field!r} has a bad salt") from exc
        if len(grain) != SALT_BYTES or base64.b64encode(grain).decode("ascii") != salt_text:
            raise AuditError(
                f"the opening of {field!r} has a bad salt (not {SALT_BYTES} bytes, canonical base64)"
            )
        if _commit(field, grain, opening["value"]) != commitment:
            raise AuditError(f"the opening of {field!r} does not match its commitment (value altered)")
        out[field] = opening["value"]
    if withheld:
        out["withheld"] = list[JsonValue](sorted(withheld))
    return out


def entry_view(body: str, openings: str) -> dict[str, JsonValue]:
    """A stored entry as readers want it: the body with its sealed fields opened (checked).
    For trusted reading (replay, tools); verification goes through ``verify.py``."""
    value = json.loads(body)
    if not isinstance(value, dict):
        raise AuditError("entry body is not a JSON object")
    return open_sealed(value, decode_openings(openings))


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry encoded except for its position: the canonical members that sort before
    ``prev``, between ``prev`` and ``seq``, and after ``seq`` (UTF-8, no braces), so that the
    log's writer only splices in ``seq`` and ``prev`` when it appends (the expensive encoding
    runs in the caller's thread, not the single writer's)."""

    request_id: str
    phase: str
    before: bytes
    between: bytes
    after: bytes
    openings: str  # as stored beside the entry (``encode_openings``)

    def body(self, seq: int, prev: str) -> bytes:
        """The canonical body at position ``seq`` chained to ``prev``: exactly
        ``encode_entry`` of the same entry built with that ``seq`` and ``prev``."""
        if type(seq) is not int or seq < 1 or not is_entry_hash(prev):
            raise AuditError("audit entry position: seq must be a positive integer, prev a hex digest")
        return b"".join(
            (
                b"{",
                self.before,
                b',"prev":"',
                prev.encode("ascii"),
                b'",',
                self.between,
                b',"seq":',
                str(seq).encode("ascii"),
                b",",
                self.after,
                b"}",
            )
        )


def prepare_entry(
    record: AuditRecord,
    sealed_fields: Sequence[str] = (),
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
) -> PreparedEntry:
    """Build, seal and encode the entry for ``record``, all but its position. Raises
    AuditError for a record that cannot be an entry (a float, a bad phase, ...).

    This is the audit writer's hot path, so members are written one by one: scalars exactly as
    :func:`canonical_json` writes them (the tests compare the two), anything else through it.
    """
    if sealed_fields:
        entry, openings = seal(build_entry(record, seq=1, prev=GENESIS_HASH), sealed_fields, salt)
        del entry["prev"], entry["seq"]
        keys = sorted(entry)  # top-level keys are fixed ASCII names: plain order is canonical
        values = [entry[key] for key in keys]
        texts = [_KEY_TEXT.get(key) or _encode_string(key) + ":" for key in keys]
    else:  # no dict at all: the entry's members are the record's fields, by name
        _check_position_free(record)
        keys, texts, values, openings = _PLAIN_KEYS, _PLAIN_TEXTS, list(_plain_values(record)), {}
        values[_PLAIN_REASONS] = list(record.reasons)
        values[_PLAIN_V] = FORMAT_VERSION
    members = list(map(_member, texts, values, keys))
    cut, cut2 = bisect.bisect(keys, "prev"), bisect.bisect(keys, "seq")
    try:
        before, between, after = (
            ",".join(members[start:end]).encode("utf-8")
            for start, end in ((0, cut), (cut, cut2), (cut2, len(members)))
        )
    except UnicodeEncodeError as exc:
        raise AuditError("canonical JSON: text contains a lone surrogate (not well-formed Unicode)") from exc
    return PreparedEntry(record.request_id, record.phase, before, between, after, encode_openings(openings))


def _check_position_free(record: AuditRecord) -> None:
    """What ``build_entry`` checks of a record (it also checks the position)."""
    if not isinstance(record.request_id, str) or not record.request_id:
        raise AuditError("audit record request_id must be a non-empty string")
    if record.phase not in AUDIT_PHASES:
        raise AuditError(f"audit record phase must be one of {', '.join(AUDIT_PHASES)}")


def _member(key_text: str, value: JsonValue, key: str) -> str:
    if isinstance(value, str):
        return key_text + _encode_string(value)
    if value is None:
        return key_text + "null"
    if value is True or value is False:
        return key_text + ("true" if value else "false")
    if isinstance(value, int) and type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return key_text + str(value)
    try:
        return key_text + canonical_json(value).decode("utf-8")
    except AuditError as exc:
        raise AuditError(f"audit field {key!r}: {exc}") from exc


# What the canonical encoder writes for a string (``ensure_ascii=False``): quoted and escaped.
_encode_string: Callable[[str], str] = json.encoder.encode_basestring
# A format-4 entry without seq and prev, in canonical member order; every member but "v" is the
# AuditRecord field of the same name ("reasons" as a list).
_PLAIN_KEYS = sorted(ENTRY_FIELDS - {"seq", "prev"})
_KEY_TEXT = {key: _encode_string(key) + ":" for key in ENTRY_FIELDS | {"sealed"}}
_PLAIN_TEXTS = [_KEY_TEXT[key] for key in _PLAIN_KEYS]
_PLAIN_V = _PLAIN_KEYS.index("v")
_PLAIN_REASONS = _PLAIN_KEYS.index("reasons")
_plain_values = operator.attrgetter(*(key if key != "v" else "phase" for key in _PLAIN_KEYS))


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
    try:  # the usual case, quickly: a canonical body (so no member twice) of a valid entry
        value = json.loads(body, parse_float=_refuse_float, parse_constant=_refuse_float)
        if isinstance(value, dict) and canonical_json(value) == body:
            return _checked(value, body, canonical=True)
    except (ValueError, AuditError):
        pass
    # Something is wrong: parse it again strictly, to say what.
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
    return _checked(value, body, canonical=False)


def _checked(value: dict[str, JsonValue], body: bytes, *, canonical: bool) -> dict[str, JsonValue]:
    """``value`` (parsed from ``body``; ``canonical`` when known to be its canonical text) if it
    is a well-formed entry; AuditError saying why not."""
    version = value.get("v")
    if version in _SEALED_BASE and not isinstance(version, bool):
        sealed = value.get("sealed")
        if (
            not isinstance(sealed, dict)
            or not sealed
            or not set(sealed) <= set(SEALABLE_FIELDS)
            or not all(isinstance(c, str) and _COMMITMENT.fullmatch(c) for c in sealed.values())
        ):
            raise AuditError("entry sealed is not a map of sealable fields to sha256: commitments")
        fields = (_SEALED_BASE[version] - set(sealed)) | {"sealed"}
    elif isinstance(version, bool) or version not in _FIELDS_BY_VERSION:
        raise AuditError(f"unsupported entry format v={version!r} (expected one of {READABLE_VERSIONS})")
    else:
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
    if version >= 3 and "auth_method" in value and not isinstance(value["auth_method"], str):
        raise AuditError("entry auth_method is not a string")
    if (
        version >= 4
        and "findings" in value
        and not (value["findings"] is None or isinstance(value["findings"], str))
    ):
        raise AuditError("entry findings is neither null nor a string")
    if "model_digest" in value and not (
        value["model_digest"] is None or isinstance(value["model_digest"], str)
    ):
        raise AuditError("entry model_digest is neither null nor a string")
    if "trace_id" in value and not (value["trace_id"] is None or _TRACE_ID.fullmatch(str(value["trace_id"]))):
        raise AuditError("entry trace_id is neither null nor 32 lowercase hex digits")
    if value["phase"] not in AUDIT_PHASES:
        raise AuditError(f"entry phase {value['phase']!r} is not one of {', '.join(AUDIT_PHASES)}")
    if not canonical and canonical_json(value) != body:
        raise AuditError("body is not in canonical form")
    return value


def _opt_text(entry: dict[str, JsonValue], key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuditError(f"audit entry {key!r} is not text")
    return value


def _count(entry: dict[str, JsonValue], key: str) -> int:
    value = entry.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuditError(f"audit entry {key!r} is not an integer")
    return value


def record_from_entry(entry: dict[str, JsonValue]) -> AuditRecord:
    """The :class:`AuditRecord` an (opened) entry was written from, as far as it holds it:
    fields withheld (sealed, opening not kept) or absent in older formats come back as None.
    Raises AuditError for an entry that cannot be one (a field of the wrong type)."""
    request_id, phase = entry.get("request_id"), entry.get("phase", "complete")
    decision, status, reasons = entry.get("decision"), entry.get("status"), entry.get("reasons", [])
    if not isinstance(request_id, str) or not request_id:
        raise AuditError("audit entry has no request_id")
    if phase not in AUDIT_PHASES:
        raise AuditError(f"audit entry {request_id}: unknown phase {phase!r}")
    if decision not in ("allow", "deny", "invalid", "error"):
        raise AuditError(f"audit entry {request_id}: unknown decision {decision!r}")
    if isinstance(status, bool) or not isinstance(status, int):
        raise AuditError(f"audit entry {request_id}: status is not an integer")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise AuditError(f"audit entry {request_id}: reasons are not a list of codes")
    return AuditRecord(
        request_id=request_id,
        time=_opt_text(entry, "time") or "",
        principal_id=_opt_text(entry, "principal_id") or "",
        tenant=_opt_text(entry, "tenant") or "",
        endpoint=_opt_text(entry, "endpoint") or "",
        model=_opt_text(entry, "model"),
        decision=decision,  # type: ignore[arg-type]  # checked above
        status=status,
        reasons=tuple(str(r) for r in reasons),
        policy_digest=_opt_text(entry, "policy_digest"),
        request_digest=_opt_text(entry, "request_digest"),
        response_digest=_opt_text(entry, "response_digest"),
        prompt_tokens=_count(entry, "prompt_tokens"),
        completion_tokens=_count(entry, "completion_tokens"),
        latency_ms=_count(entry, "latency_ms"),
        phase=phase,
        policy_input=_opt_text(entry, "policy_input"),
        output_policy_input=_opt_text(entry, "output_policy_input"),
        obligations=_opt_text(entry, "obligations"),
        output_obligations=_opt_text(entry, "output_obligations"),
        auth_method=_opt_text(entry, "auth_method") or "none",
        findings=_opt_text(entry, "findings"),
        model_digest=_opt_text(entry, "model_digest"),
        trace_id=_opt_text(entry, "trace_id"),
    )
