"""Every response, a crash included, carries x-request-id; a crash is a bare 500 envelope."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.api.middleware import RequestIdMiddleware


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.state.request_id})


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("secret detail /root/.llmos")


def _client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/ok", ok), Route("/boom", boom)])
    app.add_middleware(RequestIdMiddleware)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )


@pytest.mark.anyio
async def test_the_header_is_the_request_id_the_handler_saw() -> None:
    async with _client() as client:
        r = await client.get("/ok")
    assert r.headers["x-request-id"] == r.json()["id"]
    assert r.headers["x-request-id"].startswith("req_")


@pytest.mark.anyio
async def test_a_crash_is_a_500_envelope_with_an_id_and_no_detail() -> None:
    async with _client() as client:
        first = await client.get("/boom")
        second = await client.get("/boom")
    assert first.status_code == 500
    assert first.json()["error"]["code"] == "internal_error"
    assert "secret" not in first.text
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
