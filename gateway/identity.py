"""Who is calling: an ``Authorization`` header or a client certificate becomes a ``Caller``.

Three ways in, tried in this order:

1. ``Authorization: Bearer sk-llmos-...``: an API key (``gateway.keys``);
2. ``Authorization: Bearer <JWT>``: an OIDC access token from a configured issuer
   (``gateway.oidc``), when any issuer is configured;
3. no ``Authorization`` header, over TLS with a verified client certificate: the certificate's
   subject or SAN mapped to a principal (``gateway.mtls``), when mTLS authentication is on.

A presented credential that fails is never retried another way: a bad token with a good
certificate is still refused. Every refusal gives the caller one generic message; the precise
reason (``AuthFailure.reason``) is for counters and the audit trail only, never the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.auth import INVALID, bearer_token
from gateway.errors import AuthenticationFailed
from gateway.keys import KEY_PREFIX, ApiKeyStore, KeyInfo
from gateway.oidc.compact import looks_like_jwt
from gateway.oidc.errors import INVALID_TOKEN
from gateway.types import Principal

MAX_AUTHORIZATION_BYTES = 16 * 1024  # longer headers are refused before any parsing or hashing


class AuthFailure(AuthenticationFailed):
    """A refused credential, with the reason kept for counting and auditing (not shown)."""

    def __init__(self, message: str, *, reason: str, method: str, code: str = "invalid_api_key") -> None:
        super().__init__(message, code=code)
        self.reason = reason
        self.method = method


class TokenVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


@dataclass(frozen=True)
class Caller:
    """An authenticated principal and, when it came with an API key, that key's scopes and limits."""

    principal: Principal
    key: KeyInfo | None = None

    def allows_endpoint(self, endpoint: str) -> bool:
        return self.key is None or self.key.allows_endpoint(endpoint)

    def allows_model(self, model: str) -> bool:
        return self.key is None or self.key.allows_model(model)


# A verified peer certificate (``ssl.SSLSocket.getpeercert()`` shape) -> its principal, or None.
CertMapper = Callable[[dict[str, object]], Principal | None]


@dataclass
class Authenticator:
    keys: ApiKeyStore
    tokens: TokenVerifier | None = None
    certs: CertMapper | None = None

    def authenticate(self, authorization: str | None, peer_cert: dict[str, object] | None = None) -> Caller:
        """The caller behind these credentials; raises ``AuthFailure`` (401) otherwise."""
        if not authorization and peer_cert is not None and self.certs is not None:
            principal = self.certs(peer_cert)
            if principal is None:
                raise AuthFailure(
                    "Client certificate not recognised.", reason="unknown_certificate", method="mtls"
                )
            return Caller(principal)
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION_BYTES:
            raise AuthFailure(INVALID, reason="too_large", method="none")
        try:
            token = bearer_token(authorization)
        except AuthenticationFailed as exc:
            raise AuthFailure(exc.message, reason="missing", method="none", code=exc.code) from None
        if token.startswith(KEY_PREFIX) or self.tokens is None or not looks_like_jwt(token):
            info = self.keys.authenticate(token)
            if info is None:
                raise AuthFailure(INVALID, reason="invalid_api_key", method="api_key")
            return Caller(info.principal(), info)
        try:
            return Caller(self.tokens.verify(token))
        except AuthFailure:
            raise
        except AuthenticationFailed as exc:
            reason = getattr(exc, "reason", "invalid_token")
            raise AuthFailure(
                INVALID_TOKEN, reason=str(reason), method="oidc", code="invalid_token"
            ) from None
