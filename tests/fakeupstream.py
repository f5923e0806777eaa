"""A scriptable OpenAI-compatible upstream for tests: a real HTTP server (aiohttp) on loopback,
in a thread of its own, so that synchronous tests and a gateway subprocess can both use it.

Each request is answered by the next scripted :class:`Reply` (``script``), or by ``default``
once the script is used up; every request received is kept in ``received`` (path, headers,
JSON body) so that tests can check what left the gateway.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY = "sk-upstream-test-key-0123456789"


@dataclass
class Reply:
    """How to answer one request."""

    status: int = 200
    text: str = "Hello from upstream."
    chunks: tuple[str, ...] | None = None  # streamed pieces (default: the text in words)
    finish: str = "stop"
    usage: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # raw body instead of an answer (errors, garbage)
    delay_s: float = 0.0  # before the answer's headers
    chunk_delay_s: float = 0.0  # between streamed chunks
    drop_after: int | None = None  # streams: close the connection after this many chunks
    # Functions called (id, name, arguments); a stream sends each call's arguments in pieces of
    # ``call_piece`` characters, the id and name with the first.
    calls: tuple[tuple[str, str, str], ...] = ()
    call_piece: int = 5
    raw_call: dict[str, Any] | None = None  # one call exactly as given (malformed ones)
    echo: bool = False  # answer with the last message's content (what the upstream saw)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeUpstream:
    def __init__(self, key: str | None = KEY) -> None:
        self.key = key
        self.script: list[Reply] = []
        self.default = Reply()
        self.received: list[Received] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        reply = self.script.pop(0) if self.script else self.default
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response(
                {"error": {"message": f"Incorrect API key provided: {request.headers.get('Authorization')}"}},
                status=401,
            )
        if reply.body is not None or reply.status != 200:
            return web.Response(
                status=reply.status,
                text=reply.body or json.dumps({"error": {"message": "upstream secret detail acct_42"}}),
                headers=reply.headers,
                content_type="application/json",
            )
        chat = request.path.endswith("chat/completions")
        if reply.echo:
            seen = body["messages"][-1]["content"] if chat else body["prompt"]
            reply = Reply(**{**reply.__dict__, "text": seen, "echo": False})
        if body.get("stream"):
            return await self._stream(request, reply, chat, body)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            calls = _calls(reply)
            if calls:
                message = {"role": "assistant", "content": reply.text or None, "tool_calls": calls}
            choice["message"] = message
        else:
            choice["text"] = reply.text
        answer: dict[str, Any] = {
            "id": "up-1",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
        }
        if reply.usage:
            answer["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        return web.json_response(answer, headers=reply.headers)

    async def _stream(
        self, request: web.Request, reply: Reply, chat: bool, body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        pieces = reply.chunks if reply.chunks is not None else tuple(_words(reply.text))

        def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: bool = False) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = delta or {}
            else:
                choice["text"] = (delta or {}).get("content", "")
            obj: dict[str, Any] = {"id": "up-1", "object": "chat.completion.chunk", "choices": [choice]}
            if usage:
                obj = {"id": "up-1", "object": "chat.completion.chunk", "choices": []}
                obj["usage"] = {"prompt_tokens": 11, "completion_tokens": len(pieces), "total_tokens": 0}
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        if chat:
            await response.write(chunk({"role": "assistant", "content": ""}))
        for n, piece in enumerate(pieces):
            if reply.drop_after is not None and n >= reply.drop_after:
                assert request.transport is not None
                request.transport.close()
                return response
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            await response.write(chunk({"content": piece}))
        for delta in _call_deltas(reply):
            await response.write(chunk({"tool_calls": [delta]}))
        await response.write(chunk(None, reply.finish))
        include = (body.get("stream_options") or {}).get("include_usage")
        if reply.usage and include:
            await response.write(chunk(None, usage=True))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _words(text: str) -> Iterator[str]:
    words = text.split(" ")
    for i, w in enumerate(words):
        yield w if i == 0 else " " + w


def _calls(reply: Reply) -> list[dict[str, Any]]:
    if reply.raw_call is not None:
        return [reply.raw_call]
    return [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}
        for cid, name, arguments in reply.calls
    ]


def _call_deltas(reply: Reply) -> Iterator[dict[str, Any]]:
    if reply.raw_call is not None:
        yield {**reply.raw_call, "index": 0}
        return
    for index, (cid, name, arguments) in enumerate(reply.calls):
        step = max(1, reply.call_piece)
        pieces = [arguments[i : i + step] for i in range(0, len(arguments), step)] or [""]
        for n, piece in enumerate(pieces):
            delta: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
            if n == 0:
                delta = {
                    "index": index,
                    "id": cid,
                    "type": "function",
                    "function": {"name": name, "arguments": piece},
                }
            yield delta


@contextmanager
def fake_upstream(key: str | None = KEY) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(key).start()
    try:
        yield upstream
    finally:
        upstream.stop()
