"""OIDC/JWT bearer-token authentication: verify tokens from trusted identity providers.

    config.py    OidcConfig / OidcIssuerConfig: the ``oidc:`` section of llmos.yaml
    compact.py   pure parsing of a JWS compact serialization (nothing trusted yet)
    keys.py      pure JWKS parsing into a KeyRing of verification keys
    fetch.py     the network seam (Fetch), its httpx implementation, discovery documents
    jwks.py      IssuerKeys: the per-issuer, thread-safe, rate-limited key cache
    claims.py    pure claim checks (time, audience) and mapping to a Principal
    verify.py    TokenVerifier: the steps above in order
    errors.py    TokenRejected (401 with a reason), IdpError, idp_unavailable() (503)

See docs/oidc.md.
"""

from gateway.oidc.config import OidcConfig, OidcIssuerConfig
from gateway.oidc.errors import TokenRejected
from gateway.oidc.fetch import Fetch
from gateway.oidc.verify import TokenVerifier, looks_like_jwt

__all__ = ["Fetch", "OidcConfig", "OidcIssuerConfig", "TokenRejected", "TokenVerifier", "looks_like_jwt"]
