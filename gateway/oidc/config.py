"""Typed configuration of OIDC bearer-token verification (the ``oidc:`` section of llmos.yaml).

Each trusted identity provider is one ``OidcIssuerConfig``. Its keys come from its JWKS: the
``jwks_uri`` given here, or else the one named by ``<issuer>/.well-known/openid-configuration``
(whose ``issuer`` must equal the configured one exactly). Only ``https://`` URLs are accepted,
and ``http://`` for loopback hosts (127.0.0.1, ::1, localhost) used in tests and local setups.

Principal ids: a token's principal is ``oidc:<h>:<sub>`` where ``<h>`` is the first 8 hex digits
of SHA-256 over the issuer URL. The hash keeps ids short and free of URL characters, stays
stable as long as the issuer URL does, and keeps two issuers' subjects apart (the config refuses
two issuers whose prefixes collide). ``OidcIssuerConfig.id_prefix`` gives the ``oidc:<h>:`` part.

See docs/oidc.md for the YAML shape, claim mapping and the key-caching policy.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Algorithm = Literal["RS256", "ES256", "EdDSA"]
ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256", "EdDSA")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

# The same shapes gateway.keys accepts for API-key principals.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ROLE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
CLAIM_PATH_PATTERN = r"^[^.\s]+(\.[^.\s]+)*$"  # "roles", "realm_access.roles"


def check_url(value: str, what: str, *, query: bool = True) -> str:
    """``value`` if it is an https URL (or http on a loopback host); ``ValueError`` otherwise."""
    parts = urlsplit(value)  # may raise ValueError itself (a bad IPv6 literal)
    host = parts.hostname
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError(f"{what} must be an absolute https:// URL, got {value!r}")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"{what} must use https:// (http:// is allowed only for 127.0.0.1, ::1 or localhost)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not carry a user name or password")
    if parts.fragment or (parts.query and not query):
        raise ValueError(f"{what} must not have a {'fragment' if parts.fragment else 'query'}")
    return value


class OidcIssuerConfig(BaseModel):
    """One trusted issuer: where its keys are, what its tokens must say, how claims map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str  # compared exactly with the token's `iss`
    discovery: bool = True  # find jwks_uri in <issuer>/.well-known/openid-configuration
    jwks_uri: str | None = None  # used instead of discovery when set
    audiences: list[str] = Field(min_length=1)  # a token's `aud` must name at least one
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(ALGORITHMS), min_length=1)
    leeway_s: int = Field(default=60, ge=0, le=600)  # clock skew allowed for exp, nbf and iat

    subject_claim: str = Field(default="sub", pattern=CLAIM_PATH_PATTERN)
    tenant_claim: str | None = Field(default="tenant", pattern=CLAIM_PATH_PATTERN)
    default_tenant: str | None = None  # when the tenant claim is absent (else: refused)
    roles_claim: str = Field(default="roles", pattern=CLAIM_PATH_PATTERN)  # list or "a b c"
    role_map: dict[str, str] = Field(default_factory=dict)  # IdP role -> llmos role; filters
    default_roles: list[str] = Field(default_factory=list)  # when the token yields no role

    jwks_cache_s: float = Field(default=300.0, gt=0, le=86400)  # keys re-fetched after this
    jwks_refresh_min_interval_s: float = Field(default=10.0, ge=0, le=3600)  # unknown-kid refetches
    jwks_max_stale_s: float = Field(default=86400.0, gt=0)  # stale keys used while the IdP is down
    http_timeout_s: float = Field(default=2.0, gt=0, le=30)

    @field_validator("algorithms", mode="before")
    @classmethod
    def _no_weak_algorithms(cls, value: Any) -> Any:
        for alg in value if isinstance(value, list | tuple) else ():
            if not isinstance(alg, str):
                continue
            if alg.lower() == "none":
                raise ValueError("'none' is never accepted: unsigned tokens prove nothing")
            if alg.upper().startswith("HS"):
                raise ValueError(
                    f"{alg!r} is never accepted: symmetric algorithms would let anyone holding the "
                    "shared secret (or, by algorithm confusion, the public key) mint tokens; "
                    f"use {', '.join(ALGORITHMS)}"
                )
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        return check_url(value, "issuer", query=False)

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "jwks_uri")

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, value: list[str]) -> list[str]:
        if any(not a for a in value):
            raise ValueError("an audience must not be empty")
        return value

    @field_validator("default_tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not TENANT_PATTERN.fullmatch(value):
            raise ValueError("default_tenant must be 1-64 characters: letters, digits, '.', '_', '@', '-'")
        return value

    @field_validator("default_roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        _check_roles(value, "default_roles")
        return value

    @field_validator("role_map")
    @classmethod
    def _role_map(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k for k in value):
            raise ValueError("role_map: an IdP role name must not be empty")
        _check_roles(list(value.values()), "role_map values")
        return value

    @model_validator(mode="after")
    def _key_source(self) -> OidcIssuerConfig:
        if self.jwks_uri is None and not self.discovery:
            raise ValueError("set jwks_uri, or discovery: true to find it from the issuer")
        if self.jwks_max_stale_s < self.jwks_cache_s:
            raise ValueError("jwks_max_stale_s must be at least jwks_cache_s")
        return self

    @property
    def discovery_url(self) -> str:
        """Where OpenID Connect Discovery 1.0 puts the provider's configuration document."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def id_prefix(self) -> str:
        """``oidc:<first 8 hex digits of sha256(issuer)>:``, the start of every principal id."""
        return "oidc:" + hashlib.sha256(self.issuer.encode()).hexdigest()[:8] + ":"


class OidcConfig(BaseModel):
    """All trusted issuers; none configured means bearer JWTs are not accepted at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuers: list[OidcIssuerConfig] = Field(default_factory=list)
    max_token_bytes: int = Field(default=8192, ge=512, le=65536)

    @field_validator("issuers")
    @classmethod
    def _distinct(cls, issuers: list[OidcIssuerConfig]) -> list[OidcIssuerConfig]:
        names = [i.issuer for i in issuers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate issuers: {', '.join(dupes)}")
        prefixes = [i.id_prefix for i in issuers]
        if len(set(prefixes)) != len(prefixes):  # 32-bit hash: practically never
            raise ValueError("two issuers hash to the same principal id prefix; change one URL")
        return issuers


def _check_roles(roles: list[str], what: str) -> None:
    bad = [r for r in roles if not ROLE_PATTERN.fullmatch(r)]
    if bad:
        raise ValueError(f"{what}: {bad[0]!r} is not a role name (lowercase letter, then a-z 0-9 _ . -)")
