"""The bearer token of an ``Authorization`` header, and the 401 messages for API keys.

``gateway.identity`` decides what a token is (API key or JWT) and how to check it.

Every failure gives the same message for a wrong, revoked or expired key, so a caller learns
nothing about which keys exist.
"""

from __future__ import annotations

from gateway.errors import AuthenticationFailed

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
