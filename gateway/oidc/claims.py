"""Pure claim checks and mapping, applied after a token's signature has verified.

``check_claims`` enforces the time window and the audience; ``to_principal`` maps the subject,
tenant and roles into a ``Principal``. Both raise ``TokenRejected`` with a reason and never put
a claim value into an error.

Mapping (docs/oidc.md has examples):

* subject: the ``subject_claim`` (dotted path), a non-empty printable string.
* tenant: the ``tenant_claim`` when present (it must then be a valid tenant name), otherwise
  ``default_tenant``; with neither the token is refused (``no_tenant``).
* roles: the ``roles_claim`` (dotted path), a list of strings or one space-separated string
  (like ``scope``). With a non-empty ``role_map`` only mapped names are kept, as their llmos
  role; without one, names that are valid role names are kept as they are and others dropped.
  If nothing is left, ``default_roles`` apply.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.oidc.config import ROLE_PATTERN, TENANT_PATTERN, OidcIssuerConfig
from gateway.oidc.errors import TokenRejected
from gateway.types import Principal

_MISSING = object()


def check_claims(claims: dict[str, Any], config: OidcIssuerConfig, now: float) -> None:
    """Refuse a token outside its validity window (with leeway) or meant for another audience."""
    leeway = config.leeway_s
    exp = _time(claims, "exp")
    if exp is None:
        raise TokenRejected("missing_claim")
    if now >= exp + leeway:
        raise TokenRejected("expired")
    nbf = _time(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejected("not_yet_valid")
    iat = _time(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenRejected("issued_in_future")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not any(
        isinstance(a, str) and a in config.audiences for a in audiences
    ):
        raise TokenRejected("bad_audience")


def to_principal(claims: dict[str, Any], config: OidcIssuerConfig) -> Principal:
    """The principal a verified token stands for."""
    sub = claim(claims, config.subject_claim)
    if sub is _MISSING:
        raise TokenRejected("missing_claim")
    if not isinstance(sub, str) or not sub or len(sub) > 255 or not sub.isprintable():
        raise TokenRejected("bad_claim")
    return Principal(
        id=config.id_prefix + sub,
        name=sub,
        tenant=_tenant(claims, config),
        roles=_roles(claims, config),
        auth_method="oidc",
    )


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or ``_MISSING``."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected("bad_claim")
    return float(value)


def _tenant(claims: dict[str, Any], config: OidcIssuerConfig) -> str:
    value = _MISSING if config.tenant_claim is None else claim(claims, config.tenant_claim)
    if value is _MISSING or value is None:
        if config.default_tenant is None:
            raise TokenRejected("no_tenant")
        return config.default_tenant
    if not isinstance(value, str) or not TENANT_PATTERN.fullmatch(value):
        raise TokenRejected("bad_claim")
    return value


def _roles(claims: dict[str, Any], config: OidcIssuerConfig) -> tuple[str, ...]:
    value = claim(claims, config.roles_claim)
    if value is _MISSING or value is None:
        names: list[str] = []
    elif isinstance(value, str):
        names = value.split()
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = value
    else:
        raise TokenRejected("bad_claim")
    if config.role_map:
        mapped = [config.role_map[n] for n in names if n in config.role_map]
    else:
        mapped = [n for n in names if ROLE_PATTERN.fullmatch(n)]
    roles = tuple(dict.fromkeys(mapped))  # de-duplicated, first occurrence order
    return roles or tuple(config.default_roles)
