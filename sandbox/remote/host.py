"""A worker host: sandboxed model workers served to gateways over mutual TLS.

``llmos worker serve --listen ADDR`` builds the same supervised, sandboxed workers and model
pool as a gateway does for its local models (``gateway.runtime.build_local_workers``, placement,
on-demand loading, restarts), and serves them on a TLS listener that accepts only gateway
certificates (``tls.py``). Each connection carries many requests (``wire.py``): a generate
frame runs ``generate`` on the named model and its events go back as frames; a cancel, or the
connection closing, cancels the request in the worker. A ping is answered with every model's
state, which gateways use as their health check.

The host keeps no audit trail: requests reach it already authenticated, decided, redacted and
audited by a gateway; its workers' lifecycle events go to its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from gateway.errors import WorkerError, WorkerUnavailable
from gateway.types import GenerateEvent, GenerateRequest
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    error_frame,
    event_to_frame,
    read_frame,
    request_from_frame,
    write_frame,
)
from sandbox.remote.wire import error_to_frame

log = logging.getLogger("llmos.sandbox.remote")

HANDSHAKE_TIMEOUT_S = 10.0


class HostedModel(Protocol):
    @property
    def state(self) -> str: ...

    def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]: ...

    def explanation(self, request_id: str) -> asyncio.Future[Frame] | None: ...


class _Connection:
    """One gateway's connection: its requests in flight, and one writer for all of them."""

    def __init__(self, host: WorkerHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.host = host
        self.reader = reader
        self.writer = writer
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._write_lock = asyncio.Lock()

    async def send(self, frame: Frame) -> None:
        async with self._write_lock:
            await write_frame(self.writer, frame)

    def abort(self) -> None:
        """Stop serving: requests in flight end (503 worker_stopped), the connection closes."""
        for task in list(self.tasks.values()):
            task.cancel()
        self.writer.close()

    async def run(self) -> None:
        try:
            while True:
                frame = await read_frame(self.reader)
                if frame is None:
                    return
                self._handle(frame)
        except (ProtocolError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.warning("worker host: gateway connection dropped: %s", type(exc).__name__)
        finally:
            for task in list(self.tasks.values()):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await self.writer.wait_closed()

    def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        wire_id = frame.get("id")
        if kind == "ping":
            states = {name: model.state for name, model in self.host.models.items()}
            self._spawn(f"ping:{wire_id}", self.send({"type": "pong", "id": wire_id, "models": states}))
        elif kind == "cancel" and isinstance(wire_id, str):
            task = self.tasks.get(wire_id)
            if task is not None:
                task.cancel()
        elif kind == "generate" and isinstance(wire_id, str):
            if wire_id in self.tasks:
                raise ProtocolError("a generate frame reused the id of a request in flight")
            self._spawn(wire_id, self._generate(wire_id, frame))
        else:
            raise ProtocolError(f"unexpected {kind!r} frame from the gateway")

    def _spawn(self, key: str, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self.tasks[key] = task
        task.add_done_callback(lambda _: self.tasks.pop(key, None))

    @staticmethod
    async def _quietly(work: Any) -> None:
        """Run ``work``; a connection that went away meanwhile is not an error of the request."""
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await work

    async def _generate(self, wire_id: str, frame: Frame) -> None:
        name = frame.get("model")
        model = self.host.models.get(name) if isinstance(name, str) else None
        if model is None:
            await self.send(
                error_frame(wire_id, "model_not_found", "this worker host does not serve that model")
            )
            return
        try:
            request = request_from_frame(frame)
        except ProtocolError as exc:
            await self.send(error_frame(wire_id, "invalid_request", f"malformed request: {exc}"))
            return
        finished = False
        try:
            async with contextlib.aclosing(model.generate(request)) as events:
                async for event in events:
                    await self.send(event_to_frame(wire_id, event))
            finished = True
        except WorkerError as exc:
            await self.send(error_to_frame(wire_id, exc))
            return
        except asyncio.CancelledError:
            # The gateway asked (it no longer listens for this id), or this host is stopping:
            # then the request ends as a local one does when its worker stops (503).
            stopping = WorkerUnavailable("the worker host is stopping", code="worker_stopped")
            with contextlib.suppress(Exception):
                self.writer.write(encode_frame(error_to_frame(wire_id, stopping)))
            raise
        if finished and request.explain is not None:
            owed = model.explanation(request.id)
            if owed is not None:
                explained = await owed
                await self.send({**explained, "id": wire_id})


class WorkerHost:
    """The TLS listener in front of ``models`` (``ModelPool.models``). ``start`` then ``stop``."""

    def __init__(self, models: Mapping[str, HostedModel], tls: ssl.SSLContext, host: str, port: int) -> None:
        self.models = models
        self._tls = tls
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: dict[_Connection, asyncio.Future[None]] = {}

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, ssl=self._tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
        )
        log.info("worker host listening on %s:%d (mutual TLS)", self._host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(x[0] for x in peer.get("subject", ()))
        log.info("worker host: gateway %r connected", subject.get("commonName", "?"))
        connection = _Connection(self, reader, writer)
        self._connections[connection] = asyncio.get_running_loop().create_future()
        try:
            await connection.run()
        finally:
            self._connections.pop(connection).set_result(None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        closing = list(self._connections.items())
        for connection, _ in closing:
            connection.abort()
        if closing:
            await asyncio.wait([done for _, done in closing], timeout=10)
        if self._server is not None:
            await self._server.wait_closed()
