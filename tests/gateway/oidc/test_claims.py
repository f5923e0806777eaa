from __future__ import annotations

from typing import Any

import pytest

from gateway.oidc.claims import check_claims, to_principal
from gateway.oidc.config import OidcIssuerConfig
from gateway.oidc.errors import TokenRejected

NOW = 1_700_000_000.0
ISSUER = "https://idp.example"


def cfg(**overrides: Any) -> OidcIssuerConfig:
    fields: dict[str, Any] = {"issuer": ISSUER, "audiences": ["llmos", "api://llmos"]}
    fields.update(overrides)
    return OidcIssuerConfig(**fields)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "aud": "llmos", "exp": NOW + 300, "tenant": "acme"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def reason_of(fn: Any, *args: Any) -> str:
    with pytest.raises(TokenRejected) as info:
        fn(*args)
    return info.value.reason


# --- time and audience: (claims overrides, expected reason or None) ---------------------------

TIME_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({}, None),
    ({"exp": NOW - 59}, None),  # within the 60 s leeway
    ({"exp": NOW - 60}, "expired"),
    ({"exp": NOW - 3600}, "expired"),
    ({"exp": None}, "missing_claim"),
    ({"exp": "tomorrow"}, "bad_claim"),
    ({"exp": True}, "bad_claim"),
    ({"exp": float("inf")}, "bad_claim"),
    ({"nbf": NOW + 60}, None),
    ({"nbf": NOW + 61}, "not_yet_valid"),
    ({"nbf": "soon"}, "bad_claim"),
    ({"iat": NOW + 60}, None),
    ({"iat": NOW + 61}, "issued_in_future"),
    ({"iat": NOW - 86400}, None),
    ({"exp": NOW + 0.5, "iat": NOW - 1.5, "nbf": NOW - 1.5}, None),  # fractional seconds
    ({"aud": ["other", "api://llmos"]}, None),
    ({"aud": "other"}, "bad_audience"),
    ({"aud": ["other"]}, "bad_audience"),
    ({"aud": []}, "bad_audience"),
    ({"aud": None}, "bad_audience"),
    ({"aud": {"llmos": True}}, "bad_audience"),
    ({"aud": [["llmos"]]}, "bad_audience"),
]


@pytest.mark.parametrize(("overrides", "reason"), TIME_CASES)
def test_time_window_and_audience(overrides: dict[str, Any], reason: str | None) -> None:
    token_claims = claims(**overrides)
    if reason is None:
        check_claims(token_claims, cfg(), NOW)
    else:
        assert reason_of(check_claims, token_claims, cfg(), NOW) == reason


def test_zero_leeway() -> None:
    assert reason_of(check_claims, claims(exp=NOW), cfg(leeway_s=0), NOW) == "expired"
    check_claims(claims(exp=NOW + 1), cfg(leeway_s=0), NOW)


# --- mapping ---------------------------------------------------------------------------------


def test_principal_fields() -> None:
    p = to_principal(claims(roles=["user"]), cfg())
    assert p.id == cfg().id_prefix + "alice"
    assert (p.name, p.tenant, p.roles, p.auth_method) == ("alice", "acme", ("user",), "oidc")


def test_subject_from_another_claim() -> None:
    p = to_principal(claims(client_id="svc-42"), cfg(subject_claim="client_id"))
    assert p.name == "svc-42" and p.id.endswith(":svc-42")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sub": None}, "missing_claim"),
        ({"sub": ""}, "bad_claim"),
        ({"sub": 42}, "bad_claim"),
        ({"sub": "x" * 256}, "bad_claim"),
        ({"sub": "evil\nlog line"}, "bad_claim"),
    ],
)
def test_bad_subjects(overrides: dict[str, Any], reason: str) -> None:
    assert reason_of(to_principal, claims(**overrides), cfg()) == reason


def test_tenant_claim_default_and_refusal() -> None:
    assert to_principal(claims(tenant="globex"), cfg(default_tenant="acme")).tenant == "globex"
    assert to_principal(claims(tenant=None), cfg(default_tenant="acme")).tenant == "acme"
    assert reason_of(to_principal, claims(tenant=None), cfg()) == "no_tenant"
    assert to_principal(claims(tenant=None), cfg(tenant_claim=None, default_tenant="t1")).tenant == "t1"
    assert reason_of(to_principal, claims(tenant=None), cfg(tenant_claim=None)) == "no_tenant"


@pytest.mark.parametrize("tenant", ["", "has space", 7, ["acme"], "x" * 65])
def test_bad_tenant_values_are_refused(tenant: Any) -> None:
    assert reason_of(to_principal, claims(tenant=tenant), cfg(default_tenant="acme")) == "bad_claim"


def test_nested_tenant_claim() -> None:
    c = claims(tenant=None, org={"id": "initech"})
    assert to_principal(c, cfg(tenant_claim="org.id")).tenant == "initech"


ROLE_CASES: list[tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    # (claims overrides, config overrides, expected roles)
    ({"roles": ["user", "auditor"]}, {}, ("user", "auditor")),
    ({"roles": ["user", "user"]}, {}, ("user",)),
    ({"roles": ["Admin", "offline access", "user"]}, {}, ("user",)),  # not role names: dropped
    ({"roles": []}, {"default_roles": ["user"]}, ("user",)),
    ({}, {"default_roles": ["user"]}, ("user",)),
    ({}, {}, ()),
    ({"scope": "openid llm.use llm.admin"}, {"roles_claim": "scope"}, ("openid", "llm.use", "llm.admin")),
    (
        {"scope": "openid llm.use"},
        {"roles_claim": "scope", "role_map": {"llm.use": "user"}},
        ("user",),
    ),
    (
        {"realm_access": {"roles": ["llm-admins", "default-roles", "uma_authorization"]}},
        {"roles_claim": "realm_access.roles", "role_map": {"llm-admins": "admin", "llm-users": "user"}},
        ("admin",),
    ),
    (
        {"roles": ["unmapped"]},
        {"role_map": {"llm-users": "user"}, "default_roles": ["auditor"]},
        ("auditor",),
    ),
    ({"roles": ["a", "b"]}, {"role_map": {"a": "user", "b": "user"}}, ("user",)),
    ({"realm_access": "not a dict"}, {"roles_claim": "realm_access.roles"}, ()),
]


@pytest.mark.parametrize(("overrides", "config", "roles"), ROLE_CASES)
def test_role_mapping(overrides: dict[str, Any], config: dict[str, Any], roles: tuple[str, ...]) -> None:
    assert to_principal(claims(**overrides), cfg(**config)).roles == roles


@pytest.mark.parametrize("roles", [42, {"user": True}, ["user", 1], [None]])
def test_roles_of_the_wrong_type_are_refused(roles: Any) -> None:
    assert reason_of(to_principal, claims(roles=roles), cfg()) == "bad_claim"
