"""``/console``: the operator console, static files of this package (gateway/console/), no
build step (docs/observability.md). The page holds no data of its own: it calls the gateway's
API with the key or token the user types, so the API's authentication, policy and audit apply
to everything it shows. The Content-Security-Policy allows this origin's own script, style and
API only; nothing inline, nothing from elsewhere, no framing."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import NotFound

router = APIRouter()

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


def _file(name: str, request: Request) -> Response:
    if not getattr(request.app.state, "console", True):
        raise NotFound("The console is turned off (server.console: false).", code="not_found")
    if name not in FILES:
        raise NotFound("No such console file.", code="not_found")
    return Response((CONSOLE_DIR / name).read_bytes(), media_type=FILES[name], headers=HEADERS)


@router.get("/console")
async def console_page(request: Request) -> Response:
    return _file("index.html", request)


@router.get("/console/{name}")
async def console_file(request: Request, name: str) -> Response:
    return _file(name, request)
