from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.oidc.config import OidcConfig, OidcIssuerConfig, check_url

ISSUER = "https://idp.example.com/realms/main"


def make(**overrides: Any) -> OidcIssuerConfig:
    fields: dict[str, Any] = {"issuer": ISSUER, "audiences": ["llmos"]}
    fields.update(overrides)
    return OidcIssuerConfig(**fields)


def error_text(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as info:
        make(**overrides)
    return str(info.value)


def test_defaults() -> None:
    cfg = make()
    assert cfg.discovery is True
    assert cfg.jwks_uri is None
    assert cfg.algorithms == ["RS256", "ES256", "EdDSA"]
    assert cfg.leeway_s == 60
    assert (cfg.subject_claim, cfg.tenant_claim, cfg.roles_claim) == ("sub", "tenant", "roles")
    assert cfg.default_tenant is None and cfg.role_map == {} and cfg.default_roles == []
    assert (cfg.jwks_cache_s, cfg.jwks_refresh_min_interval_s, cfg.http_timeout_s) == (300, 10, 2.0)
    assert cfg.jwks_max_stale_s == 86400
    assert cfg.discovery_url == ISSUER + "/.well-known/openid-configuration"
    assert OidcConfig().issuers == [] and OidcConfig().max_token_bytes == 8192


def test_discovery_url_drops_a_trailing_slash() -> None:
    assert make(issuer=ISSUER + "/").discovery_url == ISSUER + "/.well-known/openid-configuration"


def test_id_prefix_is_a_short_hash_of_the_issuer() -> None:
    digest = hashlib.sha256(ISSUER.encode()).hexdigest()[:8]
    assert make().id_prefix == f"oidc:{digest}:"
    assert make(issuer="https://other.example").id_prefix != make().id_prefix


def test_frozen_and_no_unknown_keys() -> None:
    cfg = make()
    with pytest.raises(ValidationError):
        cfg.leeway_s = 5
    assert "extra" in error_text(jwks_url="https://x.example/jwks").lower()


@pytest.mark.parametrize(
    "issuer",
    ["https://idp.example", "http://127.0.0.1:8080", "http://localhost:9000/realm", "http://[::1]:80"],
)
def test_issuer_urls_accepted(issuer: str) -> None:
    assert make(issuer=issuer).issuer == issuer


@pytest.mark.parametrize(
    ("issuer", "fragment"),
    [
        ("http://idp.example", "https"),
        ("ftp://idp.example", "https"),
        ("idp.example", "https"),
        ("https://", "https"),
        ("https://user:pw@idp.example", "user name"),
        ("https://idp.example/#x", "fragment"),
        ("https://idp.example/?a=b", "query"),
    ],
)
def test_issuer_urls_refused(issuer: str, fragment: str) -> None:
    assert fragment in error_text(issuer=issuer)


def test_jwks_uri_rules() -> None:
    assert make(jwks_uri="https://keys.example/jwks?v=2").jwks_uri == "https://keys.example/jwks?v=2"
    assert "https" in error_text(jwks_uri="http://keys.example/jwks")


def test_a_key_source_is_required() -> None:
    assert "jwks_uri" in error_text(discovery=False)
    assert make(discovery=False, jwks_uri="https://k.example/jwks").discovery is False


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused_with_a_clear_message(alg: str) -> None:
    assert "'none' is never accepted" in error_text(algorithms=[alg])


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256"])
def test_symmetric_algorithms_are_refused_with_a_clear_message(alg: str) -> None:
    text = error_text(algorithms=["RS256", alg])
    assert "symmetric" in text and "never accepted" in text


@pytest.mark.parametrize("alg", ["PS256", "ES384", "RS512", "Ed25519", ""])
def test_other_algorithms_are_refused(alg: str) -> None:
    assert "RS256" in error_text(algorithms=[alg])


def test_algorithm_list_must_not_be_empty() -> None:
    error_text(algorithms=[])


def test_audiences_required_and_non_empty() -> None:
    with pytest.raises(ValidationError):
        OidcIssuerConfig(issuer=ISSUER)  # type: ignore[call-arg]
    error_text(audiences=[])
    error_text(audiences=[""])


@pytest.mark.parametrize("leeway", [-1, 601])
def test_leeway_bounds(leeway: int) -> None:
    error_text(leeway_s=leeway)


def test_roles_and_tenants_are_checked() -> None:
    assert make(role_map={"LLM Users": "user"}, default_roles=["user"]).role_map == {"LLM Users": "user"}
    assert "role name" in error_text(role_map={"x": "Admin!"})
    assert "role name" in error_text(default_roles=["BAD ROLE"])
    assert "default_tenant" in error_text(default_tenant="no spaces allowed")


@pytest.mark.parametrize("claim", ["", "a..b", ".a", "a b"])
def test_claim_paths_are_checked(claim: str) -> None:
    error_text(roles_claim=claim)


def test_dotted_claim_paths_accepted() -> None:
    assert make(roles_claim="realm_access.roles").roles_claim == "realm_access.roles"


def test_cache_timings() -> None:
    error_text(jwks_cache_s=0)
    error_text(http_timeout_s=0)
    assert "jwks_max_stale_s" in error_text(jwks_cache_s=600, jwks_max_stale_s=60)


def test_issuers_must_be_distinct() -> None:
    with pytest.raises(ValidationError, match="duplicate issuers"):
        OidcConfig(issuers=[make(), make()])


def test_issuer_config_from_yaml_shape() -> None:
    raw = {
        "issuers": [
            {
                "issuer": "https://login.example.com",
                "audiences": ["api://llmos"],
                "algorithms": ["ES256"],
                "roles_claim": "realm_access.roles",
                "role_map": {"llm-admins": "admin"},
            }
        ],
        "max_token_bytes": 4096,
    }
    cfg = OidcConfig.model_validate(raw)
    assert cfg.issuers[0].algorithms == ["ES256"] and cfg.max_token_bytes == 4096


def test_check_url_directly() -> None:
    assert check_url("https://a.example/x", "u") == "https://a.example/x"
    with pytest.raises(ValueError, match="u must"):
        check_url("http://a.example", "u")
