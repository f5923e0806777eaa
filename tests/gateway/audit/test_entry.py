from __future__ import annotations

import hashlib
import json

import pytest

from gateway.audit.canonical import canonical_json
from gateway.audit.entry import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    build_entry,
    encode_entry,
    entry_hash,
    parse_entry,
    sign_body,
    verify_body_signature,
)
from gateway.errors import AuditError

from .conftest import KeyPair, make_record


def test_build_holds_record_fields_and_chain() -> None:
    entry = build_entry(make_record(1, reasons=("pii.email", "quota")), seq=1, prev=GENESIS_HASH)
    assert set(entry) == ENTRY_FIELDS
    assert entry["v"] == 8
    assert entry["model_digest"] is None
    assert entry["trace_id"] is None  # not traced
    assert entry["auth_method"] == "api_key"
    assert entry["findings"] is None
    assert entry["seq"] == 1
    assert entry["prev"] == "0" * 64
    assert entry["request_id"] == "req-0001"
    assert entry["reasons"] == ["pii.email", "quota"]


def test_body_round_trips_through_parse() -> None:
    body = encode_entry(build_entry(make_record(3, model=None), seq=3, prev="f" * 64))
    parsed = parse_entry(body)
    assert parsed["seq"] == 3
    assert parsed["model"] is None
    assert canonical_json(parsed) == body


def test_a_format_2_entry_still_parses_and_a_format_3_one_needs_auth_method() -> None:
    old = dict(build_entry(make_record(), seq=1, prev=GENESIS_HASH))
    del old["auth_method"], old["findings"], old["model_digest"], old["trace_id"]
    old["v"] = 2
    assert parse_entry(canonical_json(old))["v"] == 2  # written before auth_method existed
    with pytest.raises(AuditError, match="missing"):
        parse_entry(canonical_json({**old, "v": 3}))
    with pytest.raises(AuditError, match="unexpected"):
        parse_entry(canonical_json({**old, "auth_method": "api_key"}))  # v2 with a v3 field
    with pytest.raises(AuditError, match="auth_method"):
        parse_entry(canonical_json({**old, "v": 3, "auth_method": 7}))


def test_format_3_4_6_and_8_entries() -> None:
    current = dict(build_entry(make_record(findings='{"input":[],"output":[]}'), seq=1, prev=GENESIS_HASH))
    assert parse_entry(canonical_json(current))["findings"] == '{"input":[],"output":[]}'
    v6 = {k: v for k, v in current.items() if k != "trace_id"} | {"v": 6}
    assert parse_entry(canonical_json(v6))["v"] == 6  # written before trace ids
    with pytest.raises(AuditError, match="unexpected"):
        parse_entry(canonical_json({**current, "v": 6}))  # a v6 entry with a v8 field
    with pytest.raises(AuditError, match="trace_id"):
        parse_entry(canonical_json({**current, "trace_id": "not-a-trace"}))
    traced = build_entry(make_record(trace_id="4bf92f3577b34da6a3ce929d0e0e4736"), seq=1, prev=GENESIS_HASH)
    assert parse_entry(canonical_json(traced))["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    current = v6 | {"v": 6}
    v4 = {k: v for k, v in current.items() if k != "model_digest"} | {"v": 4}
    assert parse_entry(canonical_json(v4))["v"] == 4  # written before model digests
    with pytest.raises(AuditError, match="unexpected"):
        parse_entry(canonical_json({**current, "v": 4}))  # a v4 entry with a v6 field
    with pytest.raises(AuditError, match="model_digest"):
        parse_entry(canonical_json({**current, "model_digest": 5}))
    served = build_entry(make_record(model_digest="sha256:" + "d" * 64), seq=1, prev=GENESIS_HASH)
    assert parse_entry(canonical_json(served))["model_digest"] == "sha256:" + "d" * 64
    v3 = {k: v for k, v in v4.items() if k != "findings"} | {"v": 3}
    assert parse_entry(canonical_json(v3))["v"] == 3
    with pytest.raises(AuditError, match="missing"):
        parse_entry(canonical_json({**v3, "v": 4}))
    with pytest.raises(AuditError, match="findings"):
        parse_entry(canonical_json({**current, "findings": 5}))


def test_hash_is_sha256_of_body() -> None:
    body = encode_entry(build_entry(make_record(), seq=1, prev=GENESIS_HASH))
    assert entry_hash(body) == hashlib.sha256(body).hexdigest()


def test_sign_and_verify(keypair: KeyPair) -> None:
    body = encode_entry(build_entry(make_record(), seq=1, prev=GENESIS_HASH))
    signature = sign_body(keypair.private_key, body)
    assert verify_body_signature(keypair.public_key, body, signature)
    assert not verify_body_signature(keypair.public_key, body + b" ", signature)
    assert not verify_body_signature(keypair.public_key, body, "not base64!")
    assert not verify_body_signature(keypair.public_key, body, signature[:-4])


@pytest.mark.parametrize(
    ("seq", "prev"), [(0, GENESIS_HASH), (-1, GENESIS_HASH), (1, "abc"), (1, "F" * 64), (True, GENESIS_HASH)]
)
def test_build_refuses_bad_position(seq: int, prev: str) -> None:
    with pytest.raises(AuditError):
        build_entry(make_record(), seq=seq, prev=prev)


def test_build_refuses_empty_request_id() -> None:
    with pytest.raises(AuditError, match="request_id"):
        build_entry(make_record(request_id=""), seq=1, prev=GENESIS_HASH)


def _valid() -> dict[str, object]:
    return dict(build_entry(make_record(), seq=1, prev=GENESIS_HASH))


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff", "not JSON"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v":1,"v":1}', "duplicate member"),
        (b'{"v":1.0}', "non-integer number"),
        (b'{"v":NaN}', "non-integer number"),
        (b'{"v":1}', "unsupported entry format"),
        (b'{"v":2}', "missing"),
    ],
)
def test_parse_refuses(body: bytes, why: str) -> None:
    with pytest.raises(AuditError, match=why):
        parse_entry(body)


def test_parse_refuses_non_canonical_and_bad_fields() -> None:
    valid = _valid()
    with pytest.raises(AuditError, match="canonical form"):
        parse_entry(json.dumps(valid, indent=1).encode())
    for field, value, why in [
        ("seq", 0, "seq"),
        ("prev", "xyz", "prev"),
        ("request_id", "", "request_id"),
        ("extra", 1, "unexpected"),
    ]:
        tampered = {**valid, field: value}
        with pytest.raises(AuditError, match=why):
            parse_entry(canonical_json(tampered))
