from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.oidc.compact import MalformedToken, b64url_decode, looks_like_jwt, parse_unverified
from tests.gateway.oidc.idp import b64url


def seg(obj: object) -> str:
    return b64url(json.dumps(obj).encode())


def raw(claims: bytes) -> str:
    return f"{seg({'alg': 'ES256'})}.{b64url(claims)}.c2ln"


GOOD = f"{seg({'alg': 'ES256'})}.{seg({'iss': 'x'})}.{b64url(b'sig')}"


def test_parses_header_claims_and_signing_input() -> None:
    parsed = parse_unverified(GOOD)
    assert parsed.header == {"alg": "ES256"}
    assert parsed.claims == {"iss": "x"}
    assert parsed.signing_input == GOOD.rsplit(".", 1)[0].encode()
    assert parsed.signature == b"sig"


def test_empty_signature_parses_so_alg_none_can_be_named() -> None:
    token = f"{seg({'alg': 'none'})}.{seg({})}."
    assert parse_unverified(token).signature == b""
    assert looks_like_jwt(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",  # two segments
        "a.b.c.d.e",  # JWE-shaped
        f"{seg({'alg': 'ES256'})}.{seg({'iss': 'x'})}",
        f".{seg({})}.c2ln",
        f"{seg({'alg': 'ES256'})}..c2ln",
        f"{seg({'alg': 'ES256'})}.{seg({})}.c2ln\n",  # trailing newline
        f"{seg({'alg': 'ES256'})}.{seg({})}.c2l=",  # padding
        f"{seg({'alg': 'ES256'})}.{seg({})}.c2l+",  # not url-safe
        f"{seg({'alg': 'ES256'})}.{b64url(b'not json')}.c2ln",
        f"{seg({'alg': 'ES256'})}.{seg([1, 2])}.c2ln",  # not an object
        f"{seg('str')}.{seg({})}.c2ln",
        raw(b'{"a":1,"a":2}'),  # duplicate member
        raw(b'{"exp":NaN}'),
        raw(b'{"exp":Infinity}'),
        raw(bytes([0xFF, 0xFE])),  # not UTF-8
        raw(b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}"),  # deep nesting
        f"{seg({})}.{seg({})}.c2lnx",  # length 5 mod 4 == 1
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(MalformedToken) as info:
        parse_unverified(token)
    assert token not in str(info.value) or not token


def test_non_canonical_base64_is_refused() -> None:
    # "c2lnYQ" and "c2lnYR" decode to the same bytes; only the canonical spelling is accepted.
    assert b64url_decode("c2lnYQ") == b"siga"
    with pytest.raises(ValueError):
        b64url_decode("c2lnYR")


def test_looks_like_jwt() -> None:
    assert looks_like_jwt(GOOD)
    assert not looks_like_jwt("sk-llmos-0123456789abcdef-" + "A" * 43)
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_raises_only_malformed_on_any_text(text: str) -> None:
    with contextlib.suppress(MalformedToken):
        parse_unverified(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200), st.binary(max_size=80))
def test_parser_raises_only_malformed_on_any_segments(header: bytes, claims: bytes, sig: bytes) -> None:
    try:
        parsed = parse_unverified(f"{b64url(header)}.{b64url(claims)}.{b64url(sig)}")
    except MalformedToken:
        return
    assert isinstance(parsed.header, dict) and isinstance(parsed.claims, dict)
    assert parsed.signature == sig
