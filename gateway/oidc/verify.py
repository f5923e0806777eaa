"""``TokenVerifier``: a bearer JWT from a configured OIDC issuer becomes a ``Principal``.

The steps, each refusing with ``TokenRejected`` (401, one generic message, a ``reason``):

1. size: at most ``max_token_bytes``                                      (too_large)
2. shape: three canonical base64url segments, header and claims JSON objects (malformed)
3. header: ``alg`` one of RS256/ES256/EdDSA (never ``none``, never HS*); no ``crit``/``b64``;
   ``typ`` absent or a JWT type                                  (bad_algorithm, malformed)
4. issuer: the unverified ``iss`` picks a configured issuer          (unknown_issuer), whose
   allowlist must hold ``alg``                                                (bad_algorithm)
5. key: ``kid`` (or, without one, the only key for ``alg``) in that issuer's JWKS, refreshed
   as ``gateway.oidc.jwks`` says                                                (unknown_key)
6. signature: joserfc's model of that algorithm, with that single key       (bad_signature)
7. claims: exp/nbf/iat with leeway, ``aud``, subject, tenant, roles (``gateway.oidc.claims``)

Only after step 6 is anything in the token believed; steps 1-5 just choose what to check
against. Because the key is chosen by the token's issuer and must match the algorithm's key
type, a token signed by issuer A's key but claiming issuer B fails, and so does algorithm
confusion (an HMAC "signed" with a public key). Exceptions are raised ``from None``: third-party
messages may quote the token, and the token must never reach a log.

When no keys can be had the verifier raises ``ServiceUnavailable`` (503 idp_unavailable); a
verification that needs a key refresh blocks on the network for up to about four times
``http_timeout_s`` (discovery plus JWKS), so call ``verify`` off the event loop.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from joserfc.errors import JoseError
from joserfc.jws import JWSAlgModel, JWSRegistry

from gateway.errors import ServiceUnavailable
from gateway.oidc.claims import check_claims, to_principal
from gateway.oidc.compact import MalformedToken, looks_like_jwt, parse_unverified
from gateway.oidc.config import ALGORITHMS, OidcConfig, OidcIssuerConfig
from gateway.oidc.errors import TokenRejected
from gateway.oidc.fetch import Fetch, http_fetch
from gateway.oidc.jwks import IssuerKeys
from gateway.types import Principal

__all__ = ["TokenVerifier", "looks_like_jwt"]

_JWT_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_REFUSED_HEADERS = ("crit", "b64")  # no extensions are understood, so none may be critical


def jws_algorithms(names: Sequence[str]) -> dict[str, JWSAlgModel]:
    """joserfc's models of ``names`` (a subset of RS256, ES256, EdDSA), and of nothing else.

    joserfc 1.8 flags "EdDSA" as deprecated by RFC 9864 and warns on every use; with an Ed25519
    key it is the very algorithm RFC 9864 calls "Ed25519", so a copy of its model without the
    warning is used. none, HS*, PS*, ES384... are simply absent.
    """
    models: dict[str, JWSAlgModel] = {}
    for name in names:
        if name not in ALGORITHMS:
            raise ValueError(f"unsupported JWS algorithm {name!r}")
        model = JWSRegistry.algorithms[name]
        if model.security_warning:
            model = copy.copy(model)
            model.security_warning = None
        models[name] = model
    return models


@dataclass(frozen=True)
class _Issuer:
    config: OidcIssuerConfig
    keys: IssuerKeys
    algorithms: dict[str, JWSAlgModel]


class TokenVerifier:
    """Verifies bearer JWTs against the configured issuers; safe to share between threads."""

    def __init__(
        self,
        config: OidcConfig,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        fetch = http_fetch if fetch is None else fetch
        self._issuers = {
            c.issuer: _Issuer(c, IssuerKeys(c, fetch, clock), jws_algorithms(c.algorithms))
            for c in config.issuers
        }

    @property
    def enabled(self) -> bool:
        """Whether any issuer is configured (else every JWT is refused as ``unknown_issuer``)."""
        return bool(self._issuers)

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """Whether ``token`` has the shape of a JWT (route it here rather than to API keys)."""
        return looks_like_jwt(token)

    def issuer_keys(self, issuer: str) -> IssuerKeys:
        """The key cache of a configured issuer (``KeyError`` if not configured)."""
        return self._issuers[issuer].keys

    def warm(self) -> list[str]:
        """Fetch every issuer's keys now (call at startup); the issuers left without keys."""
        failed = []
        for issuer, entry in self._issuers.items():
            try:
                entry.keys.refresh()
            except ServiceUnavailable:
                failed.append(issuer)
        return failed

    def verify(self, token: str) -> Principal:
        """The principal behind ``token``; ``TokenRejected`` (401) or ``ServiceUnavailable`` (503)."""
        if len(token) > self.config.max_token_bytes:
            raise TokenRejected("too_large")
        try:
            unverified = parse_unverified(token)
        except MalformedToken:
            raise TokenRejected("malformed") from None
        header, claims = unverified.header, unverified.claims

        alg = header.get("alg")
        if not isinstance(alg, str):
            raise TokenRejected("malformed")
        if alg not in ALGORITHMS:  # none, HS*, and anything else
            raise TokenRejected("bad_algorithm")
        typ = header.get("typ")
        if any(h in header for h in _REFUSED_HEADERS) or (
            typ is not None and (not isinstance(typ, str) or typ.lower() not in _JWT_TYPES)
        ):
            raise TokenRejected("malformed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")

        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejected("unknown_issuer")
        if alg not in issuer.config.algorithms:
            raise TokenRejected("bad_algorithm")

        key = issuer.keys.key_for(kid, alg)
        if key is None:
            raise TokenRejected("unknown_key")
        model = issuer.algorithms[alg]
        try:
            model.check_key(key.jwk)  # key type, curve, use and alg agree with the algorithm
            valid = model.verify(unverified.signing_input, unverified.signature, key.jwk)
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise TokenRejected("bad_signature")

        check_claims(claims, issuer.config, self._clock())
        return to_principal(claims, issuer.config)
