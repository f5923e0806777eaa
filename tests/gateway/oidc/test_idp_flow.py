"""End to end over real HTTP: tokens from the local authlib IdP, keys fetched with httpx."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from gateway.errors import ServiceUnavailable
from gateway.oidc.compact import parse_unverified
from gateway.oidc.errors import TokenRejected
from gateway.oidc.verify import TokenVerifier
from tests.gateway.oidc.conftest import FakeClock, issuer_config, verifier_for
from tests.gateway.oidc.idp import LocalIdp, generate_key, sign

ROLE_MAP = {"llm-users": "user", "llm-admins": "admin"}


def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token)
    assert token not in str(info.value)
    return info.value.reason


def verifier_of(idp: LocalIdp, clock: FakeClock, **overrides: Any) -> TokenVerifier:
    return verifier_for(issuer_config(idp.issuer, **overrides), clock=clock)


@pytest.mark.parametrize("method", ["basic", "post"])
def test_client_credentials_token_verifies_into_the_principal(
    idp: LocalIdp, clock: FakeClock, method: Any
) -> None:
    client = idp.register_client(
        "reporting-svc", tenant="acme", roles=["llm-users", "llm-admins", "calendar-readers"]
    )
    response = idp.request_token(client, method=method)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300

    principal = verifier_of(idp, clock, role_map=ROLE_MAP).verify(body["access_token"])
    assert principal.id == issuer_config(idp.issuer).id_prefix + "reporting-svc"
    assert principal.name == "reporting-svc"
    assert principal.tenant == "acme"
    assert principal.roles == ("user", "admin")  # calendar-readers is not mapped
    assert principal.auth_method == "oidc"


def test_the_idp_refuses_bad_client_credentials(idp: LocalIdp) -> None:
    client = idp.register_client("svc", "right-secret", tenant="acme")
    response = idp.request_token(dataclasses.replace(client, client_secret="wrong-secret"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert idp.issued == []


def test_token_carries_rfc9068_claims_and_nbf(idp: LocalIdp, clock: FakeClock) -> None:
    client = idp.register_client("svc", tenant="acme", scope="llm.use")
    token = idp.access_token(client, scope="llm.use")
    verifier = verifier_of(idp, clock, roles_claim="scope", role_map={"llm.use": "user"})
    assert verifier.verify(token).roles == ("user",)
    parsed = parse_unverified(token)
    assert parsed.header["typ"] == "at+jwt" and parsed.header["kid"] == idp.kids[-1]
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "client_id", "scope"} <= parsed.claims.keys()


@pytest.mark.parametrize("use_discovery", [True, False])
def test_discovery_and_explicit_jwks_uri(idp: LocalIdp, clock: FakeClock, use_discovery: bool) -> None:
    client = idp.register_client("svc", tenant="acme")
    jwks_uri = None if use_discovery else idp.jwks_uri
    verifier = verifier_of(idp, clock, jwks_uri=jwks_uri, discovery=use_discovery)
    assert verifier.verify(idp.access_token(client)).tenant == "acme"
    assert idp.settings.discovery_requests == (1 if use_discovery else 0)
    assert idp.settings.jwks_requests == 1


def test_discovery_document_for_another_issuer_is_refused(idp: LocalIdp, clock: FakeClock) -> None:
    idp.settings.discovery_issuer = "https://impostor.example"
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock)
    with pytest.raises(ServiceUnavailable) as info:
        verifier.verify(idp.access_token(client))
    assert info.value.code == "idp_unavailable"
    assert idp.settings.jwks_requests == 0  # its keys were never trusted


def test_rotation_and_retirement(clock: FakeClock, idp_factory: Callable[..., LocalIdp]) -> None:
    idp = idp_factory("EC", token_lifetime_s=3600)
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock, jwks_cache_s=60, jwks_refresh_min_interval_s=10)
    old_kid = idp.kids[0]
    old_token = idp.access_token(client)
    verifier.verify(old_token)
    assert idp.settings.jwks_requests == 1

    new_kid = idp.rotate_key()
    new_token = idp.access_token(client)
    assert new_kid != old_kid and parse_unverified(new_token).header["kid"] == new_kid
    clock.advance(10)
    verifier.verify(new_token)  # unknown kid -> one refetch finds it
    assert idp.settings.jwks_requests == 2
    verifier.verify(old_token)  # the old key is still published
    assert idp.settings.jwks_requests == 2

    idp.retire_key(old_kid)
    verifier.verify(old_token)  # cached for up to jwks_cache_s
    clock.advance(60)
    assert reason(verifier, old_token) == "unknown_key"
    verifier.verify(new_token)
    assert idp.settings.jwks_requests == 3


def test_rotation_across_key_types(clock: FakeClock, idp_factory: Callable[..., LocalIdp]) -> None:
    idp = idp_factory("RSA", token_lifetime_s=3600)
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock, jwks_refresh_min_interval_s=0)
    tokens = [idp.access_token(client)]
    for key_type in ("EC", "OKP"):
        idp.rotate_key(key_type)
        tokens.append(idp.access_token(client))
    algs = []
    for token in tokens:
        algs.append(parse_unverified(token).header["alg"])
        assert verifier.verify(token).name == "svc"
    assert algs == ["RS256", "ES256", "EdDSA"]


def test_unknown_kid_refetch_is_rate_limited(idp: LocalIdp, clock: FakeClock) -> None:
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock, jwks_refresh_min_interval_s=10)
    verifier.verify(idp.access_token(client))
    clock.advance(10)
    for i in range(30):
        forged = idp.mint(tenant="acme")
        header_kid_forged = sign(
            {"iss": idp.issuer, "aud": "llmos", "sub": "x", "exp": clock.now + 60, "tenant": "acme"},
            generate_key("EC", kid=f"forged-{i}"),
        )
        assert reason(verifier, header_kid_forged) == "unknown_key"
        assert verifier.verify(forged).name == "svc-test"
    assert idp.settings.jwks_requests == 2
    assert idp.settings.discovery_requests == 2


def test_unreachable_idp_without_cached_keys_is_503(clock: FakeClock, dead_url: str) -> None:
    verifier = verifier_for(issuer_config(dead_url, http_timeout_s=0.5), clock=clock)
    key = generate_key("EC")
    token = sign({"iss": dead_url, "aud": "llmos", "sub": "x", "exp": clock.now + 60, "tenant": "t"}, key)
    with pytest.raises(ServiceUnavailable) as info:
        verifier.verify(token)
    assert (info.value.status, info.value.code, info.value.retry_after) == (503, "idp_unavailable", 1)
    assert verifier.warm() == [dead_url]


def test_cached_keys_outlive_an_idp_outage(clock: FakeClock, idp_factory: Callable[..., LocalIdp]) -> None:
    idp = idp_factory("EC", token_lifetime_s=3600)
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock, jwks_cache_s=60, jwks_max_stale_s=600)
    token = idp.access_token(client)
    verifier.verify(token)
    idp.settings.fail = True
    clock.advance(120)
    assert verifier.verify(token).name == "svc"  # stale-while-error
    clock.advance(600)
    with pytest.raises(ServiceUnavailable):
        verifier.verify(token)
    idp.settings.fail = False
    clock.advance(10)
    assert verifier.verify(token).name == "svc"


def test_multiple_issuers_each_with_their_own_keys(
    clock: FakeClock, idp_factory: Callable[..., LocalIdp]
) -> None:
    idp_a, idp_b = idp_factory("EC"), idp_factory("OKP")
    a = idp_a.register_client("svc", tenant="acme", roles=["user"])
    b = idp_b.register_client("svc", tenant="globex", roles=["auditor"])
    verifier = verifier_for(issuer_config(idp_a.issuer), issuer_config(idp_b.issuer), clock=clock)

    pa, pb = verifier.verify(idp_a.access_token(a)), verifier.verify(idp_b.access_token(b))
    assert (pa.tenant, pa.roles, pb.tenant, pb.roles) == ("acme", ("user",), "globex", ("auditor",))
    assert pa.name == pb.name == "svc" and pa.id != pb.id  # same sub, different issuers

    # Signed by A's key, claiming to come from B: B's keys do not include A's kid...
    assert reason(verifier, idp_a.mint(iss=idp_b.issuer, tenant="globex")) == "unknown_key"
    # ...and with B's kid in the header the signature does not verify under B's key.
    forged = sign(
        {"iss": idp_b.issuer, "aud": "llmos", "sub": "root", "exp": clock.now + 60, "tenant": "globex"},
        idp_a.signing_key,
        header={"alg": "ES256", "kid": idp_b.kids[0]},
    )
    assert reason(verifier, forged) == "unknown_key"  # B's kid is an Ed25519 key, not ES256
    forged_eddsa = sign(
        {"iss": idp_b.issuer, "aud": "llmos", "sub": "root", "exp": clock.now + 60, "tenant": "globex"},
        generate_key("OKP", kid=idp_b.kids[0]),
    )
    assert reason(verifier, forged_eddsa) == "bad_signature"


def test_token_for_another_audience(idp: LocalIdp, clock: FakeClock) -> None:
    client = idp.register_client("svc", tenant="acme", audience=["billing-api"])
    assert reason(verifier_of(idp, clock), idp.access_token(client)) == "bad_audience"
    both = idp.register_client("svc2", tenant="acme", audience=["billing-api", "llmos"])
    assert verifier_of(idp, clock).verify(idp.access_token(both)).name == "svc2"


def test_expired_idp_token(clock: FakeClock, idp_factory: Callable[..., LocalIdp]) -> None:
    idp = idp_factory("EC", token_lifetime_s=30)
    client = idp.register_client("svc", tenant="acme")
    verifier = verifier_of(idp, clock, leeway_s=5)
    token = idp.access_token(client)
    verifier.verify(token)
    clock.advance(40)
    assert reason(verifier, token) == "expired"
