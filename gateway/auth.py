"""Authentication: turn an ``Authorization`` header into a ``Principal`` or refuse with 401.

Every failure gives the same message for a wrong, revoked or expired key, so a caller learns
nothing about which keys exist.
"""

from __future__ import annotations

from gateway.errors import AuthenticationFailed
from gateway.keys import ApiKeyStore, KeyInfo

MISSING = "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer <key>'."
INVALID = "Incorrect, expired or revoked API key."


def bearer_token(header: str | None) -> str:
    """Extract the bearer token from an Authorization header value."""
    if not header:
        raise AuthenticationFailed(MISSING, code="missing_api_key")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(MISSING, code="missing_api_key")
    return token


def authenticate(header: str | None, store: ApiKeyStore) -> KeyInfo:
    """The active key behind ``header``; raises ``AuthenticationFailed`` otherwise."""
    info = store.authenticate(bearer_token(header))
    if info is None:
        raise AuthenticationFailed(INVALID)
    return info
