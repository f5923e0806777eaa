"""The network seam of OIDC verification: ``Fetch``, its httpx implementation, discovery.

``Fetch`` is ``(url, timeout_s) -> body``: the key cache calls it for the discovery document and
the JWKS, and nothing else in ``gateway.oidc`` touches the network. Any failure is an
``IdpError``. Tests pass their own ``Fetch`` to count or break requests.

``http_fetch`` makes one plain GET: no redirects followed, no proxy or netrc settings from the
environment, TLS verified, the body capped at ``MAX_BODY_BYTES``, anything but 200 an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx

from gateway.oidc.config import check_url
from gateway.oidc.errors import IdpError

Fetch = Callable[[str, float], bytes]

MAX_BODY_BYTES = 1024 * 1024


def http_fetch(url: str, timeout_s: float) -> bytes:
    """GET ``url`` and return its body; ``IdpError`` on any failure (names the URL only).

    ``timeout_s`` bounds each network operation and, doubled, the whole download.
    """
    deadline = time.monotonic() + 2 * timeout_s
    try:
        with httpx.stream(
            "GET",
            url,
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        ) as response:
            if response.status_code != 200:
                raise IdpError(f"GET {url}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise IdpError(f"GET {url}: the response is over {MAX_BODY_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise IdpError(f"GET {url}: the response took over {2 * timeout_s:g} s")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise IdpError(f"GET {url}: {type(exc).__name__}") from exc


def jwks_uri_from_discovery(body: bytes, issuer: str, source: str) -> str:
    """The ``jwks_uri`` of an OpenID provider configuration document for ``issuer``."""
    return endpoint_from_discovery(body, issuer, source, "jwks_uri")


def endpoint_from_discovery(body: bytes, issuer: str, source: str, name: str) -> str:
    """The URL named ``name`` (``jwks_uri``, ``token_endpoint``, ...) in an OpenID provider
    configuration document for ``issuer``.

    The document's ``issuer`` must equal ``issuer`` exactly (OpenID Connect Discovery 1.0,
    section 4.3), and the URL must pass the same rules as a configured one.
    """
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IdpError(f"{source}: the discovery document is not JSON") from exc
    if not isinstance(doc, dict):
        raise IdpError(f"{source}: the discovery document is not a JSON object")
    if doc.get("issuer") != issuer:
        raise IdpError(
            f"{source}: the discovery document names issuer {str(doc.get('issuer'))[:200]!r}, "
            f"not the configured {issuer!r}; fix oidc.issuers[].issuer or the IdP"
        )
    uri = doc.get(name)
    if not isinstance(uri, str):
        raise IdpError(f"{source}: the discovery document has no {name}")
    try:
        return check_url(uri, name)
    except ValueError as exc:
        raise IdpError(f"{source}: {exc}") from exc
