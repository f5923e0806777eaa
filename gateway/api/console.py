"""``/console``: the operator console, static files of this package (gateway/console/), no
build step (docs/observability.md). The page holds no data of its own: it calls the gateway's
API with the key or token the user types, or the access token it gets by signing in at the
configured OpenID provider (``console.oidc``: authorization code with PKCE), so the API's
authentication, policy and audit apply to everything it shows. The Content-Security-Policy
allows this origin's own script, style and API only (and, for the sign-in, the provider's
token endpoint); nothing inline, nothing else, no framing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.config import ConsoleConfig
from gateway.errors import NotFound, ServiceUnavailable
from gateway.oidc.config import OidcIssuerConfig
from gateway.oidc.errors import IdpError
from gateway.oidc.fetch import endpoint_from_discovery, http_fetch

router = APIRouter()

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
DISCOVERY_TTL_S = 300.0
_discovered: dict[str, tuple[float, dict[str, str]]] = {}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def headers(token_endpoint: str | None) -> dict[str, str]:
    connect = "'self'" + (f" {_origin(token_endpoint)}" if token_endpoint else "")
    return {
        "content-security-policy": (
            f"default-src 'none'; script-src 'self'; style-src 'self'; connect-src {connect}; img-src 'self';"
            " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cache-control": "no-cache",
    }


def discover(issuer: OidcIssuerConfig) -> dict[str, str]:
    """The provider's authorization and token endpoints (OpenID discovery, as the API's token
    verification finds its keys; cached 5 minutes)."""
    now = time.monotonic()
    cached = _discovered.get(issuer.issuer)
    if cached is not None and now - cached[0] < DISCOVERY_TTL_S:
        return cached[1]
    source = issuer.discovery_url
    body = http_fetch(source, issuer.http_timeout_s)
    names = ("authorization_endpoint", "token_endpoint")
    endpoints = {name: endpoint_from_discovery(body, issuer.issuer, source, name) for name in names}
    _discovered[issuer.issuer] = (now, endpoints)
    return endpoints


def _console(request: Request) -> ConsoleConfig:
    config: ConsoleConfig | None = getattr(request.app.state, "console", None)
    config = config or ConsoleConfig()
    if not config.enabled:
        raise NotFound("The console is turned off (console.enabled: false).", code="not_found")
    return config


async def _endpoints(request: Request, config: ConsoleConfig) -> dict[str, str] | None:
    if config.oidc is None:
        return None
    issuers: tuple[OidcIssuerConfig, ...] = getattr(request.app.state, "oidc_issuers", ())
    issuer = next((i for i in issuers if i.issuer == config.oidc.issuer), None)
    if issuer is None:  # the configuration validator makes it one of oidc.issuers
        raise NotFound("The console's identity provider is not configured.", code="not_found")
    try:
        return await asyncio.to_thread(discover, issuer)
    except IdpError as exc:
        raise ServiceUnavailable(
            "The console's identity provider could not be reached.", code="idp_unavailable", retry_after=5
        ) from exc


async def _file(name: str, request: Request) -> Response:
    config = _console(request)
    if name not in FILES:
        raise NotFound("No such console file.", code="not_found")
    token_endpoint = None
    if name == "index.html" and config.oidc is not None:
        endpoints = await _endpoints(request, config)
        token_endpoint = endpoints["token_endpoint"] if endpoints else None
    return Response(
        (CONSOLE_DIR / name).read_bytes(), media_type=FILES[name], headers=headers(token_endpoint)
    )


@router.get("/console")
async def console_page(request: Request) -> Response:
    return await _file("index.html", request)


@router.get("/console/config.json")
async def console_config(request: Request) -> Response:
    """What the page needs to offer a sign-in: public values only."""
    config = _console(request)
    body: dict[str, Any] = {"oidc": None}
    endpoints = await _endpoints(request, config)
    if config.oidc is not None and endpoints is not None:
        body["oidc"] = {
            "issuer": config.oidc.issuer,
            "client_id": config.oidc.client_id,
            "scope": config.oidc.scope,
        }
        body["oidc"].update(endpoints)
    return JSONResponse(body, headers={"cache-control": "no-cache"})


@router.get("/console/{name}")
async def console_file(request: Request, name: str) -> Response:
    return await _file(name, request)
