"""``prepare_entry`` (the hot path: encode in the caller's thread, splice the position in the
writer) writes exactly the bytes of the reference encoder, for any record."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.canonical import MAX_SAFE_INTEGER
from gateway.audit.entry import (
    GENESIS_HASH,
    SEALABLE_FIELDS,
    build_entry,
    encode_entry,
    parse_entry,
    prepare_entry,
    seal,
)
from gateway.errors import AuditError
from gateway.types import AUDIT_PHASES

from .conftest import make_record

# Text with what canonical JSON must escape or keep: quotes, backslashes, controls, U+2028,
# non-BMP characters; lone surrogates are refused (tested below).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
OPTIONAL_TEXT = st.none() | TEXT
INT = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)

records = st.builds(
    make_record,
    st.integers(1, 9999),
    request_id=TEXT.filter(bool),
    time=TEXT,
    principal_id=TEXT,
    auth_method=TEXT,
    tenant=TEXT,
    endpoint=TEXT,
    model=OPTIONAL_TEXT,
    status=INT,
    reasons=st.lists(TEXT, max_size=4).map(tuple),
    policy_digest=OPTIONAL_TEXT,
    request_digest=OPTIONAL_TEXT,
    response_digest=OPTIONAL_TEXT,
    prompt_tokens=INT,
    completion_tokens=INT,
    latency_ms=INT,
    phase=st.sampled_from(AUDIT_PHASES),
    policy_input=OPTIONAL_TEXT,
    findings=OPTIONAL_TEXT,
    model_digest=OPTIONAL_TEXT,
)


@settings(max_examples=300)
@given(records, st.integers(1, MAX_SAFE_INTEGER), HEX)
def test_prepared_bodies_are_the_canonical_encoding(record: Any, seq: int, prev: str) -> None:
    body = prepare_entry(record).body(seq, prev)
    assert body == encode_entry(build_entry(record, seq=seq, prev=prev))
    assert parse_entry(body)["seq"] == seq


@settings(max_examples=100)
@given(records, st.sets(st.sampled_from(SEALABLE_FIELDS), min_size=1), st.integers(1, 10**9), HEX)
def test_prepared_sealed_entries_are_the_canonical_encoding(
    record: Any, fields: set[str], seq: int, prev: str
) -> None:
    order = sorted(fields)
    prepared = prepare_entry(record, order, salt=lambda: b"s" * 16)
    entry, _ = seal(build_entry(record, seq=seq, prev=prev), order, salt=lambda: b"s" * 16)
    assert prepared.body(seq, prev) == encode_entry(entry)


def test_a_record_outside_the_subset_is_refused_with_its_field() -> None:
    with pytest.raises(AuditError, match=r"'latency_ms'.*float"):
        prepare_entry(make_record(latency_ms=1.5))
    with pytest.raises(AuditError, match="lone surrogate"):
        prepare_entry(make_record(tenant="\udc80"))
    with pytest.raises(AuditError, match="request_id"):
        prepare_entry(make_record(request_id=""))
    with pytest.raises(AuditError, match="phase"):
        prepare_entry(make_record(phase="later"))


def test_a_position_must_be_a_positive_seq_and_a_digest() -> None:
    prepared = prepare_entry(make_record())
    for seq, prev in ((0, GENESIS_HASH), (True, GENESIS_HASH), (1, "A" * 64), (1, "0" * 63)):
        with pytest.raises(AuditError, match="position"):
            prepared.body(seq, prev)


def test_a_duplicate_member_is_named_although_parsing_is_quick_first() -> None:
    body = encode_entry(build_entry(make_record(), seq=1, prev=GENESIS_HASH))
    doubled = body[:-1] + b',"v":4}'
    with pytest.raises(AuditError, match="duplicate member 'v'"):
        parse_entry(doubled)
