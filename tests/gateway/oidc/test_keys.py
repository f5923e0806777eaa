from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import RSAKey

from gateway.oidc.errors import IdpError
from gateway.oidc.keys import KeyRing, parse_jwk, parse_jwks
from tests.gateway.oidc.idp import generate_key, public_jwk


def jwks(*entries: Any) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


@pytest.mark.parametrize(("key_type", "alg"), [("RSA", "RS256"), ("EC", "ES256"), ("OKP", "EdDSA")])
def test_each_supported_key_type_is_bound_to_its_algorithm(key_type: Any, alg: str) -> None:
    key = generate_key(key_type, kid="k1")
    ring = parse_jwks(jwks(public_jwk(key)), "test")
    assert len(ring) == 1
    assert ring.keys[0].alg == alg and ring.keys[0].kid == "k1"
    assert not ring.keys[0].jwk.is_private


def test_find_by_kid_and_algorithm() -> None:
    ec, rsa = generate_key("EC", kid="a"), generate_key("RSA", kid="b")
    ring = parse_jwks(jwks(public_jwk(ec), public_jwk(rsa)), "test")
    assert ring.find("a", "ES256") is not None
    assert ring.find("a", "RS256") is None  # a kid is bound to its key type
    assert ring.find("b", "RS256") is not None
    assert ring.find("zzz", "ES256") is None


def test_without_kid_only_a_single_candidate_is_used() -> None:
    one = parse_jwks(jwks(public_jwk(generate_key("EC"))), "test")
    assert one.find(None, "ES256") is not None
    two = parse_jwks(jwks(public_jwk(generate_key("EC")), public_jwk(generate_key("EC"))), "test")
    assert two.find(None, "ES256") is None
    assert KeyRing().find(None, "ES256") is None


def test_duplicate_kids_keep_the_first() -> None:
    first, second = generate_key("EC", kid="same"), generate_key("EC", kid="same")
    ring = parse_jwks(jwks(public_jwk(first), public_jwk(second)), "test")
    found = ring.find("same", "ES256")
    assert found is not None and found.jwk.as_dict()["x"] == public_jwk(first)["x"]


def weak_rsa_jwk() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - weak on purpose
    return dict(RSAKey(private.public_key(), private.public_key()).as_dict() | {"kid": "weak"})


def ec_p384_jwk() -> dict[str, Any]:
    from joserfc.jwk import ECKey

    return dict(ECKey.generate_key("P-384").as_dict(private=False))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: {**k, "use": "enc"},
        lambda k: {**k, "key_ops": ["encrypt"]},
        lambda k: {**k, "key_ops": "verify"},
        lambda k: {**k, "alg": "ES384"},
        lambda k: {**k, "alg": "HS256"},
        lambda k: {**k, "kid": 7},
        lambda k: {**k, "kty": "oct", "k": "c2VjcmV0"},
        lambda k: {**k, "crv": "P-384"},
        lambda k: {**k, "x": "!!!"},
        lambda k: {**k, "x": "AAAA"},  # not a point on the curve
        lambda k: {k2: v for k2, v in k.items() if k2 != "y"},
        lambda k: {**k, "d": "AAAA"},  # a published private key
        lambda k: "not an object",
    ],
)
def test_unusable_keys_are_skipped_not_fatal(mutate: Any) -> None:
    good = public_jwk(generate_key("EC", kid="good"))
    bad = mutate(public_jwk(generate_key("EC", kid="bad")))
    ring = parse_jwks(jwks(bad, good), "test")
    assert ring.kids == ("good",)


def test_weak_rsa_and_other_curves_are_skipped() -> None:
    assert parse_jwk(weak_rsa_jwk()) is None
    assert parse_jwk(ec_p384_jwk()) is None
    okp = public_jwk(generate_key("OKP"))
    assert parse_jwk({**okp, "crv": "X25519"}) is None


def test_use_sig_and_verify_key_ops_are_fine() -> None:
    key = public_jwk(generate_key("EC"))
    assert parse_jwk({**key, "use": "sig", "key_ops": ["verify"], "alg": "ES256"}) is not None


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_ed25519_keys_may_name_either_algorithm(alg: str) -> None:
    key = parse_jwk({**public_jwk(generate_key("OKP")), "alg": alg})
    assert key is not None and key.alg == "EdDSA"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": {}}', b"{}", b"\xff"])
def test_a_document_that_is_no_jwks_is_an_error(body: bytes) -> None:
    with pytest.raises(IdpError, match="https://idp/jwks"):
        parse_jwks(body, "https://idp/jwks")


def test_an_empty_key_list_is_a_valid_empty_ring() -> None:
    assert len(parse_jwks(b'{"keys": []}', "test")) == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kty", "crv", "x", "y", "n", "e", "kid", "use", "alg", "key_ops", "d"]),
        json_values | st.sampled_from(["EC", "RSA", "OKP", "P-256", "Ed25519", "sig", "AQAB"]),
        max_size=8,
    )
)
def test_arbitrary_jwk_entries_never_raise(entry: dict[str, Any]) -> None:
    parse_jwk(entry)
