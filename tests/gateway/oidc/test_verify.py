"""``TokenVerifier`` against static JWKS documents: accepted tokens, and a table of attacks."""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import Key

from gateway.errors import AuthenticationFailed, ServiceUnavailable
from gateway.oidc.config import OidcIssuerConfig
from gateway.oidc.errors import INVALID_TOKEN, REJECT_REASONS, TokenRejected
from gateway.oidc.verify import TokenVerifier, jws_algorithms
from gateway.types import Principal
from tests.gateway.oidc.conftest import FakeClock, StaticFetch, issuer_config, verifier_for
from tests.gateway.oidc.idp import b64url, generate_key, hs256_token, public_jwk, raw_token, sign

A = "https://a.example"
B = "https://b.example"
ES_ONLY = "https://es-only.example"


@dataclass(frozen=True)
class Keys:
    a_ec: Key
    a_rsa: Key
    a_okp: Key
    b_ec: Key
    forged_a_ec: Key  # another key that claims the kid of a_ec


@functools.cache
def keys() -> Keys:
    return Keys(
        a_ec=generate_key("EC", kid="a-ec"),
        a_rsa=generate_key("RSA", kid="a-rsa"),
        a_okp=generate_key("OKP", kid="a-okp"),
        b_ec=generate_key("EC", kid="b-ec"),
        forged_a_ec=generate_key("EC", kid="a-ec"),
    )


def documents() -> dict[str, Any]:
    k = keys()
    return {
        A + "/jwks": {"keys": [public_jwk(k.a_ec), public_jwk(k.a_rsa), public_jwk(k.a_okp)]},
        B + "/jwks": {"keys": [public_jwk(k.b_ec)]},
        ES_ONLY + "/jwks": {"keys": [public_jwk(k.a_ec), public_jwk(k.a_rsa)]},
    }


def issuers() -> list[OidcIssuerConfig]:
    return [
        issuer_config(A, jwks_uri=A + "/jwks", role_map={"llm-users": "user", "llm-admins": "admin"}),
        issuer_config(B, jwks_uri=B + "/jwks", default_tenant="b-corp"),
        issuer_config(ES_ONLY, jwks_uri=ES_ONLY + "/jwks", algorithms=["ES256"]),
    ]


def make_verifier(clock: FakeClock | None = None, fetch: StaticFetch | None = None) -> TokenVerifier:
    return verifier_for(
        *issuers(), fetch=fetch or StaticFetch(documents()), clock=clock or FakeClock(), max_token_bytes=4096
    )


def claims(iss: Any = A, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": iss,
        "sub": "svc-1",
        "aud": ["llmos"],
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "tenant": "acme",
        "roles": ["llm-users"],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def verifier(clock: FakeClock) -> TokenVerifier:
    return make_verifier(clock)


# --- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize("key_name", ["a_ec", "a_rsa", "a_okp"])
def test_each_algorithm_verifies(verifier: TokenVerifier, key_name: str) -> None:
    token = sign(claims(roles=["llm-users", "llm-admins", "other"]), getattr(keys(), key_name))
    principal = verifier.verify(token)
    assert principal == Principal(
        id=issuers()[0].id_prefix + "svc-1",
        name="svc-1",
        tenant="acme",
        roles=("user", "admin"),
        auth_method="oidc",
    )


def test_second_issuer_with_default_tenant(verifier: TokenVerifier) -> None:
    principal = verifier.verify(sign(claims(B, tenant=None, roles=["user"]), keys().b_ec))
    assert principal.tenant == "b-corp" and principal.roles == ("user",)
    assert principal.id.startswith(issuers()[1].id_prefix)
    assert issuers()[0].id_prefix != issuers()[1].id_prefix


def test_no_kid_is_fine_when_the_issuer_has_one_key_for_the_algorithm(verifier: TokenVerifier) -> None:
    token = sign(claims(B, tenant=None), keys().b_ec, header={"alg": "ES256"})
    assert verifier.verify(token).name == "svc-1"
    token = sign(claims(A), keys().a_ec, header={"alg": "ES256", "typ": "JWT"})
    assert verifier.verify(token).name == "svc-1"  # one EC key among A's three


def test_no_kid_is_refused_when_several_keys_fit(clock: FakeClock) -> None:
    docs = documents()
    docs[A + "/jwks"]["keys"].append(public_jwk(generate_key("EC", kid="second")))
    verifier = make_verifier(clock, StaticFetch(docs))
    token = sign(claims(A), keys().a_ec, header={"alg": "ES256"})
    assert reject(verifier, token) == "unknown_key"


def test_is_verifier_shape(verifier: TokenVerifier) -> None:
    token = sign(claims(), keys().a_ec)
    assert verifier.enabled and TokenVerifier.looks_like_jwt(token)
    assert not TokenVerifier.looks_like_jwt("sk-llmos-0123456789abcdef-secret")
    assert not make_verifier_without_issuers().enabled


def make_verifier_without_issuers() -> TokenVerifier:
    return verifier_for()


# --- refused ---------------------------------------------------------------------------------


def reject(verifier: TokenVerifier, token: str, caplog: pytest.LogCaptureFixture | None = None) -> str:
    """Verify must refuse ``token`` with the generic 401 and reveal nothing of it."""
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token)
    err = info.value
    assert (err.status, err.code, err.type) == (401, "invalid_token", "authentication_error")
    assert err.message == INVALID_TOKEN and str(err) == INVALID_TOKEN
    assert err.reason in REJECT_REASONS
    assert err.__cause__ is None and (err.__suppress_context__ or err.__context__ is None)
    if token:
        for text in (str(err), repr(err), err.message):
            assert token not in text
            for part in token.split("."):
                assert len(part) < 8 or part not in text
        if caplog is not None:
            assert token not in caplog.text
    return err.reason


def now() -> int:
    return int(time.time())


def confusion_secret_pem() -> bytes:
    public = keys().a_rsa.public_key
    if not isinstance(public, RSAPublicKey):
        raise TypeError("an RSA key was expected")
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


ATTACKS: dict[str, tuple[Any, str]] = {
    # name: (token factory, expected reason)
    "expired": (lambda: sign(claims(exp=now() - 3600), keys().a_ec), "expired"),
    "expired_just_beyond_leeway": (lambda: sign(claims(exp=now() - 61), keys().a_ec), "expired"),
    "not_yet_valid": (lambda: sign(claims(nbf=now() + 3600), keys().a_ec), "not_yet_valid"),
    "iat_in_future": (lambda: sign(claims(iat=now() + 3600), keys().a_ec), "issued_in_future"),
    "forged_signature_same_kid": (lambda: sign(claims(), keys().forged_a_ec), "bad_signature"),
    "wrong_audience": (lambda: sign(claims(aud="someone-else"), keys().a_ec), "bad_audience"),
    "no_audience": (lambda: sign(claims(aud=None), keys().a_ec), "bad_audience"),
    "unknown_issuer": (lambda: sign(claims("https://evil.example"), keys().a_ec), "unknown_issuer"),
    "issuer_with_trailing_slash": (lambda: sign(claims(A + "/"), keys().a_ec), "unknown_issuer"),
    "no_issuer": (lambda: sign(claims(iss=None), keys().a_ec), "unknown_issuer"),
    "issuer_not_a_string": (lambda: sign(claims(iss=[A]), keys().a_ec), "unknown_issuer"),
    "alg_none_unsigned": (
        lambda: raw_token({"alg": "none", "typ": "JWT"}, claims(), lambda _: b""),
        "bad_algorithm",
    ),
    "alg_none_with_signature": (
        lambda: raw_token({"alg": "none", "kid": "a-ec"}, claims(), lambda _: b"sig"),
        "bad_algorithm",
    ),
    "alg_None_capitalised": (lambda: raw_token({"alg": "None"}, claims(), lambda _: b""), "bad_algorithm"),
    "hs256_signed_with_public_key_pem": (
        lambda: hs256_token(claims(), confusion_secret_pem(), {"alg": "HS256", "kid": "a-rsa"}),
        "bad_algorithm",
    ),
    "hs256_signed_with_public_jwk": (
        lambda: hs256_token(claims(), json.dumps(public_jwk(keys().a_rsa)).encode()),
        "bad_algorithm",
    ),
    "rs256_not_in_allowlist": (lambda: sign(claims(ES_ONLY), keys().a_rsa), "bad_algorithm"),
    "ps256": (
        lambda: raw_token({"alg": "PS256", "kid": "a-rsa"}, claims(), lambda _: b"x" * 256),
        "bad_algorithm",
    ),
    "rs256_header_on_ec_kid": (
        lambda: sign(claims(), keys().a_ec, alg="ES256", header={"alg": "RS256", "kid": "a-ec"}),
        "unknown_key",
    ),
    "eddsa_header_with_ec_signature": (
        lambda: sign(claims(), keys().a_ec, alg="ES256", header={"alg": "EdDSA", "kid": "a-okp"}),
        "bad_signature",
    ),
    "unknown_kid": (
        lambda: sign(claims(), generate_key("EC", kid="nobody-knows")),
        "unknown_key",
    ),
    "issuer_a_key_claiming_issuer_b": (lambda: sign(claims(B), keys().a_ec), "unknown_key"),
    "issuer_a_key_with_issuer_b_kid": (
        lambda: sign(claims(B), keys().a_ec, header={"alg": "ES256", "kid": "b-ec"}),
        "bad_signature",
    ),
    "claims_swapped_after_signing": (lambda: swap_claims(), "bad_signature"),
    "der_encoded_es256_signature": (lambda: der_signature_token(), "bad_signature"),
    "empty_signature": (lambda: sign(claims(), keys().a_ec).rsplit(".", 1)[0] + ".", "bad_signature"),
    "missing_exp": (lambda: sign(claims(exp=None), keys().a_ec), "missing_claim"),
    "exp_as_string": (lambda: sign(claims(exp=str(now() + 300)), keys().a_ec), "bad_claim"),
    "missing_sub": (lambda: sign(claims(sub=None), keys().a_ec), "missing_claim"),
    "missing_tenant_no_default": (lambda: sign(claims(tenant=None), keys().a_ec), "no_tenant"),
    "roles_not_a_list": (lambda: sign(claims(roles={"admin": True}), keys().a_ec), "bad_claim"),
    "not_base64": (lambda: "eyJ!!!.eyJ$$$.abc", "malformed"),
    "not_json": (lambda: f"{b64url(b'hello')}.{b64url(b'world')}.{b64url(b'sig')}", "malformed"),
    "two_segments": (lambda: ".".join(sign(claims(), keys().a_ec).split(".")[:2]), "malformed"),
    "five_segments_jwe": (lambda: "a.b.c.d.e", "malformed"),
    "padded_segment": (lambda: sign(claims(), keys().a_ec) + "=", "malformed"),
    "trailing_newline": (lambda: sign(claims(), keys().a_ec) + "\n", "malformed"),
    "empty": (lambda: "", "malformed"),
    "alg_missing": (lambda: raw_token({"kid": "a-ec"}, claims(), lambda _: b"s"), "malformed"),
    "alg_not_a_string": (lambda: raw_token({"alg": ["ES256"]}, claims(), lambda _: b"s"), "malformed"),
    "kid_not_a_string": (
        lambda: sign(claims(), keys().a_ec, header={"alg": "ES256", "kid": 1}),
        "malformed",
    ),
    "crit_header": (
        lambda: sign(
            claims(), keys().a_ec, header={"alg": "ES256", "kid": "a-ec", "crit": ["exp"], "exp": 1}
        ),
        "malformed",
    ),
    "unencoded_payload_b64_false": (
        lambda: sign(claims(), keys().a_ec, header={"alg": "ES256", "kid": "a-ec", "b64": False}),
        "malformed",
    ),
    "typ_not_a_jwt": (
        lambda: sign(claims(), keys().a_ec, header={"alg": "ES256", "kid": "a-ec", "typ": "secevent+jwt"}),
        "malformed",
    ),
    "huge_token": (lambda: sign(claims(padding="x" * 5000), keys().a_ec), "too_large"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_refused(verifier: TokenVerifier, name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    make, reason = ATTACKS[name]
    assert reject(verifier, make(), caplog) == reason


def swap_claims() -> str:
    signed = sign(claims(roles=["llm-users"]), keys().a_ec)
    forged = sign(claims(roles=["llm-admins"]), keys().forged_a_ec)
    header, _, sig = signed.split(".")
    return ".".join([header, forged.split(".")[1], sig])


def der_signature_token() -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    private = keys().a_ec.private_key
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise TypeError("an EC key was expected")

    def der(data: bytes) -> bytes:
        return private.sign(data, ec.ECDSA(hashes.SHA256()))

    return raw_token({"alg": "ES256", "kid": "a-ec"}, claims(), der)


def test_leeway_accepts_small_clock_skew(verifier: TokenVerifier) -> None:
    t = now()
    token = sign(claims(exp=t - 30, nbf=t + 30, iat=t + 30), keys().a_ec)
    assert verifier.verify(token).name == "svc-1"


def test_expiry_follows_the_injected_clock(clock: FakeClock, verifier: TokenVerifier) -> None:
    token = sign(claims(exp=int(clock.now) + 100), keys().a_ec)
    verifier.verify(token)
    clock.advance(159)
    verifier.verify(token)
    clock.advance(1)
    assert reject(verifier, token) == "expired"


def test_max_token_bytes_boundary(clock: FakeClock) -> None:
    token = sign(claims(padding="x" * 600), keys().a_ec)
    at_limit = verifier_for(
        *issuers(), fetch=StaticFetch(documents()), clock=clock, max_token_bytes=len(token)
    )
    assert at_limit.verify(token).name == "svc-1"
    below = verifier_for(
        *issuers(), fetch=StaticFetch(documents()), clock=clock, max_token_bytes=len(token) - 1
    )
    assert reject(below, token) == "too_large"


def test_reason_is_not_visible_to_clients(verifier: TokenVerifier) -> None:
    messages = set()
    for name in ("expired", "unknown_issuer", "forged_signature_same_kid", "not_json"):
        with pytest.raises(AuthenticationFailed) as info:
            verifier.verify(ATTACKS[name][0]())
        messages.add((info.value.message, info.value.code))
    assert messages == {(INVALID_TOKEN, "invalid_token")}


def test_unreachable_idp_is_503_not_401(clock: FakeClock) -> None:
    verifier = make_verifier(clock, StaticFetch(documents(), down=True))
    with pytest.raises(ServiceUnavailable) as info:
        verifier.verify(sign(claims(), keys().a_ec))
    assert info.value.code == "idp_unavailable"
    # A token for an unknown issuer never touches the network.
    assert reject(verifier, sign(claims("https://x.example"), keys().a_ec)) == "unknown_issuer"


def test_no_network_before_the_token_names_a_known_issuer(clock: FakeClock) -> None:
    fetch = StaticFetch(documents())
    verifier = make_verifier(clock, fetch)
    for name in ("unknown_issuer", "not_json", "alg_none_unsigned", "hs256_signed_with_public_key_pem"):
        reject(verifier, ATTACKS[name][0]())
    assert fetch.calls == []


def test_warm_reports_issuers_without_keys(clock: FakeClock) -> None:
    docs = documents()
    del docs[B + "/jwks"]
    verifier = make_verifier(clock, StaticFetch(docs))
    assert verifier.warm() == [B]
    ring = verifier.issuer_keys(A).ring
    assert ring is not None and len(ring) == 3


def test_eddsa_model_does_not_warn() -> None:
    models = jws_algorithms(["EdDSA", "ES256"])
    assert set(models) == {"EdDSA", "ES256"}
    assert models["EdDSA"].security_warning is None
    with pytest.raises(ValueError, match="unsupported"):
        jws_algorithms(["HS256"])


def test_verification_is_fast_with_cached_keys(verifier: TokenVerifier) -> None:
    token = sign(claims(), keys().a_ec)
    verifier.verify(token)
    samples = []
    for _ in range(200):
        start = time.perf_counter()
        verifier.verify(token)
        samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.002  # typically ~0.1 ms; generous for slow CI


# --- properties --------------------------------------------------------------------------------


@functools.cache
def shared_verifier() -> TokenVerifier:
    return make_verifier(FakeClock())


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=600) | st.from_regex(r"[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,60}")
)
def test_random_text_never_verifies(text: str) -> None:
    with pytest.raises(AuthenticationFailed):
        shared_verifier().verify(text)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
claim_names = st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "tenant", "roles", "scope"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(claim_names, json_values, max_size=4))
def test_any_signed_claims_give_a_principal_or_a_rejection(overrides: dict[str, Any]) -> None:
    token = sign(claims(**{k: v for k, v in overrides.items() if v is not None}), keys().a_ec)
    try:
        principal = shared_verifier().verify(token)
    except TokenRejected as err:
        assert token not in str(err)
        return
    assert principal.auth_method == "oidc" and principal.tenant


@functools.cache
def valid_token() -> str:
    return sign(claims(exp=2**31), keys().a_ec)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_single_character_change_is_refused(data: st.DataObject) -> None:
    token = valid_token()
    shared_verifier().verify(token)
    index = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[index]))
    mutated = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(AuthenticationFailed):
        shared_verifier().verify(mutated)
