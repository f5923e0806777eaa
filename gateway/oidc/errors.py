"""Errors of OIDC bearer-token verification, and where they sit in ``gateway.errors``.

    ApiError
    ├── AuthenticationFailed
    │   └── TokenRejected        401 invalid_token: one generic message; ``reason`` says why
    └── ServiceUnavailable       503 idp_unavailable: no usable keys and the IdP cannot be reached
    LlmosError
    └── IdpError                 internal: a discovery document or JWKS could not be fetched or used

A ``TokenRejected`` carries a machine-readable ``reason`` (see ``RejectReason``) for metrics and
the audit log. Its message is the same for every reason, and neither the message nor the reason
ever holds the token or a claim value, so a caller learns nothing about which check failed.
``IdpError`` never reaches a client: the key cache turns it into stale-key use or into
``idp_unavailable()``.
"""

from __future__ import annotations

from typing import Literal, get_args

from gateway.errors import AuthenticationFailed, LlmosError, ServiceUnavailable

INVALID_TOKEN = "Invalid or expired bearer token."  # noqa: S105 - a message, not a secret
IDP_UNAVAILABLE = "The identity provider is unavailable; try again shortly."

RejectReason = Literal[
    "too_large",  # over OidcConfig.max_token_bytes
    "malformed",  # not three canonical base64url segments of JSON objects, or a bad header
    "bad_algorithm",  # none, HS*, or an algorithm outside the issuer's allowlist
    "unknown_issuer",  # `iss` missing or not a configured issuer
    "unknown_key",  # no published key matches the `kid` (and algorithm)
    "bad_signature",  # the signature does not verify with the selected key
    "expired",  # `exp` + leeway is past
    "not_yet_valid",  # `nbf` is later than now + leeway
    "issued_in_future",  # `iat` is later than now + leeway
    "bad_audience",  # `aud` missing or shares nothing with the configured audiences
    "missing_claim",  # `exp` or the subject claim is absent
    "bad_claim",  # a claim has the wrong type or an unusable value
    "no_tenant",  # no tenant claim and no default tenant
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)


class TokenRejected(AuthenticationFailed):
    """A bearer token was refused; ``reason`` is for counting and auditing, never for clients."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(INVALID_TOKEN, code="invalid_token")
        self.reason: RejectReason = reason


class IdpError(LlmosError):
    """A discovery document or JWKS could not be fetched, or was unusable (names the URL)."""


def idp_unavailable() -> ServiceUnavailable:
    """The error a client sees when no verification keys can be had: 503, retry in a second."""
    return ServiceUnavailable(IDP_UNAVAILABLE, code="idp_unavailable", retry_after=1)
