"""The httpx ``Fetch`` against a real loopback server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.oidc.errors import IdpError
from gateway.oidc.fetch import MAX_BODY_BYTES, endpoint_from_discovery, http_fetch


def app() -> Starlette:
    async def ok(request: Request) -> Response:
        return JSONResponse({"keys": []})

    async def redirect(request: Request) -> Response:
        return RedirectResponse("/ok", status_code=302)

    async def big(request: Request) -> Response:
        return Response(b"x" * (MAX_BODY_BYTES + 1), media_type="application/json")

    async def broken(request: Request) -> Response:
        return JSONResponse({"error": "nope"}, status_code=500)

    return Starlette(
        routes=[
            Route("/ok", ok),
            Route("/redirect", redirect),
            Route("/big", big),
            Route("/broken", broken),
        ]
    )


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    config = uvicorn.Config(
        app(), host="127.0.0.1", port=0, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.005)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def test_fetches_a_body(server_url: str) -> None:
    assert http_fetch(server_url + "/ok", 2.0) == b'{"keys":[]}'


def test_does_not_follow_redirects(server_url: str) -> None:
    with pytest.raises(IdpError, match="HTTP 302"):
        http_fetch(server_url + "/redirect", 2.0)


def test_non_200_is_an_error(server_url: str) -> None:
    with pytest.raises(IdpError, match="HTTP 500"):
        http_fetch(server_url + "/broken", 2.0)


def test_body_size_is_capped(server_url: str) -> None:
    with pytest.raises(IdpError, match="over"):
        http_fetch(server_url + "/big", 2.0)


def test_unreachable_is_an_error(dead_url: str) -> None:
    with pytest.raises(IdpError, match="ConnectError") as info:
        http_fetch(dead_url + "/jwks", 0.5)
    assert dead_url in str(info.value)


ISSUER = "https://idp.example"


def doc(**members: object) -> bytes:
    return json.dumps({"issuer": ISSUER, **members}).encode()


def test_an_endpoint_is_read_from_a_discovery_document() -> None:
    body = doc(token_endpoint="https://idp.example/token", authorization_endpoint="https://idp.example/auth")
    assert endpoint_from_discovery(body, ISSUER, "src", "token_endpoint") == "https://idp.example/token"
    assert endpoint_from_discovery(body, ISSUER, "src", "authorization_endpoint") == "https://idp.example/auth"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (doc(), "has no token_endpoint"),
        (doc(token_endpoint="http://idp.example/token"), "https://"),  # plain http off loopback
        (doc(token_endpoint="https://u:p@idp.example/token"), "user name or password"),
        (b'{"issuer": "https://other.example", "token_endpoint": "https://x/t"}', "names issuer"),
    ],
)
def test_a_bad_discovery_document_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(IdpError, match=why):
        endpoint_from_discovery(body, ISSUER, "src", "token_endpoint")
