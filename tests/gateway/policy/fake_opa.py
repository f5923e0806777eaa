"""A fake OPA server for tests: OPA's documented REST Data API over the embedded engine.

No OPA binary can be installed here, so this implements the part of the contract llmos uses
(https://www.openpolicyagent.org/docs/latest/rest-api/):

    POST /v1/data/{path}   {"input": ...}  ->  200 {"result": <value>}, or 200 {} when undefined
    GET  /v1/policies                      ->  200 {"result": [{"id", "raw"}, ...]}
    GET  /health                           ->  200 {}

Results come from evaluating a real policy bundle with the real embedded engine
(``RegoSession``, query ``data.<path with dots>``), so a test can check that a remote decision
equals the local one. ``FakeOpaSettings`` selects faults per test; ``FakeOpaServer`` runs the
app under a real uvicorn server on a free loopback port, in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import RegoSession

# http_500: an OPA-style error body with status 500; not_json: 200 with an HTML body;
# undefined: 200 {}; malformed: 200 with a result that is no decision document; trickle: the
# right answer, one byte every 50 ms (each read is quick, the whole is slow).
Fault = Literal["http_500", "not_json", "undefined", "malformed", "trickle"]


@dataclass
class FakeOpaSettings:
    """What the fake does; tests change it between requests (``reset`` restores the defaults)."""

    policies: list[tuple[str, str]]  # (id, raw) as listed by GET /v1/policies
    sleep_s: float = 0.0  # wait this long before answering a data request
    fault: Fault | None = None  # applies to data requests and to the policy list
    data_requests: int = 0  # data requests received (so a test can see that nothing retried)
    _initial: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def reset(self) -> None:
        self.policies = list(self._initial)
        self.sleep_s = 0.0  # also releases a request that is still sleeping
        self.fault = None
        self.data_requests = 0


def bundle_policies(bundle: PolicyBundle) -> list[tuple[str, str]]:
    """The (id, raw) list ``opa run --server <dir>`` would show: every module, tests included."""
    return [(f"{bundle.root.name}/{f.path}", f.source) for f in bundle.files]


def create_app(bundle: PolicyBundle, settings: FakeOpaSettings) -> Starlette:
    session = RegoSession(bundle)
    lock = threading.Lock()  # RegoSession is not thread-safe

    def fault_response() -> Response | None:
        if settings.fault == "http_500":
            return JSONResponse({"code": "internal_error", "message": "fake failure"}, status_code=500)
        if settings.fault == "not_json":
            return PlainTextResponse("<html>502 Bad Gateway</html>", media_type="text/html")
        return None

    async def sleep_if_asked() -> None:
        end = time.monotonic() + settings.sleep_s
        while settings.sleep_s > 0 and time.monotonic() < end:  # reset() cuts it short
            await asyncio.sleep(0.01)

    async def data_post(request: Request) -> Response:
        settings.data_requests += 1
        await sleep_if_asked()
        failed = fault_response()
        if failed is not None:
            return failed
        if settings.fault == "undefined":
            return JSONResponse({})
        if settings.fault == "malformed":
            return JSONResponse({"result": {"allow": "yes"}})
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"code": "invalid_parameter", "message": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse(
                {"code": "invalid_parameter", "message": "body is not an object"}, status_code=400
            )
        # OPA leaves `input` undefined when the body has none; the embedded engine cannot unset
        # it, so the fake uses an empty object (llmos always sends an input).
        policy_input = body.get("input", {})
        query = "data." + request.path_params["path"].strip("/").replace("/", ".")
        try:
            with lock:
                value = session.query(query, policy_input)
        except PolicyError as exc:
            if exc.code == "policy_undefined":
                return JSONResponse({})
            return JSONResponse({"code": "internal_error", "message": str(exc)}, status_code=500)
        if settings.fault == "trickle":
            return StreamingResponse(
                trickle(json.dumps({"result": value}).encode()), media_type="application/json"
            )
        return JSONResponse({"result": value})

    async def trickle(body: bytes) -> AsyncIterator[bytes]:
        for i in range(len(body)):
            if settings.fault != "trickle":  # reset() sends the rest at once
                yield body[i:]
                return
            yield body[i : i + 1]
            await asyncio.sleep(0.05)

    async def policies_get(request: Request) -> Response:
        failed = fault_response()
        if failed is not None:
            return failed
        return JSONResponse({"result": [{"id": i, "raw": raw} for i, raw in settings.policies]})

    async def health(request: Request) -> Response:
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/v1/data/{path:path}", data_post, methods=["POST"]),
            Route("/v1/policies", policies_get, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


class FakeOpaServer:
    """The fake under a real uvicorn server on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, bundle: PolicyBundle) -> None:
        policies = bundle_policies(bundle)
        self.settings = FakeOpaSettings(policies=list(policies), _initial=policies)
        config = uvicorn.Config(
            create_app(bundle, self.settings),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_config=None,  # leave the test process's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-opa", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 10.0) -> FakeOpaServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OPA server did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.settings.reset()  # release any sleeping request
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("the fake OPA server did not stop")

    def __enter__(self) -> FakeOpaServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
