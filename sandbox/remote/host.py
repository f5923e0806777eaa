"""A worker host: sandboxed model workers served to gateways over mutual TLS.

``llmos worker serve --listen ADDR`` builds the same supervised, sandboxed workers and model
pool as a gateway does for its local models (``gateway.runtime.build_local_workers``, placement,
on-demand loading, restarts), and serves them on a TLS listener that accepts only gateway
certificates (``tls.py``). Each connection carries many requests (``wire.py``): a generate
frame runs ``generate`` on the named model and its events go back as frames; a cancel, or the
connection closing, cancels the request in the worker. A ping is answered with every model's
state (and whether the host is draining), which gateways use as their health check.

- **Stopping** drains: the host stops accepting connections and tells gateways (in pongs) that
  it is draining, so they send it nothing new; requests in flight may finish for up to
  ``drain_s``; whatever is left then ends with 503 ``worker_stopped``.
- A connection that sends nothing (not even a ping) for ``IDLE_TIMEOUT_S`` is closed and its
  requests cancelled: a gateway cut off by a partition leaves no orphaned generation behind.
- At most ``MAX_IN_FLIGHT`` requests per connection; more are refused (503 model_overloaded).

The host keeps no audit trail: requests reach it already authenticated, decided, redacted and
audited by a gateway; its workers' lifecycle events go to its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import Protocol

from gateway.errors import WorkerError, WorkerRequestError, WorkerUnavailable
from gateway.types import GenerateEvent, GenerateRequest
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    event_to_frame,
    read_frame,
    request_from_frame,
    write_frame,
)
from sandbox.remote.tls import CLIENT_AUTH, peer_has_usage
from sandbox.remote.wire import error_to_frame

log = logging.getLogger("llmos.sandbox.remote")

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
MAX_IN_FLIGHT = 4096


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
        self.requests: dict[str, asyncio.Task[None]] = {}
        self._others: set[asyncio.Task[None]] = set()  # pongs
        self._write_lock = asyncio.Lock()

    async def send(self, frame: Frame) -> None:
        async with self._write_lock:
            await write_frame(self.writer, frame)

    async def abort(self) -> None:
        """End every request in flight (each sends its 503 first), then close."""
        tasks = list(self.requests.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        self.writer.close()

    async def run(self) -> None:
        try:
            while True:
                frame = await asyncio.wait_for(read_frame(self.reader), self.host.idle_timeout_s)
                if frame is None:
                    return
                self._handle(frame)
        except TimeoutError:
            log.warning(
                "worker host: a gateway sent nothing for %.0f s; closing its connection",
                self.host.idle_timeout_s,
            )
        except (ProtocolError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.warning("worker host: gateway connection dropped: %s", type(exc).__name__)
        finally:
            await self.abort()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await self.writer.wait_closed()

    def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        wire_id = frame.get("id")
        if kind == "ping":
            states = {name: model.state for name, model in self.host.models.items()}
            pong = {"type": "pong", "id": wire_id, "models": states, "draining": self.host.draining}
            self._other(self.send(pong))
        elif kind == "cancel" and isinstance(wire_id, str):
            task = self.requests.get(wire_id)
            if task is not None:
                task.cancel()
        elif kind == "generate" and isinstance(wire_id, str):
            if wire_id in self.requests:
                raise ProtocolError("a generate frame reused the id of a request in flight")
            refusal: WorkerError | None = None
            if self.host.draining:
                refusal = WorkerUnavailable("the worker host is stopping", code="worker_stopped")
            elif len(self.requests) >= MAX_IN_FLIGHT:
                refusal = WorkerUnavailable(
                    "the worker host is overloaded; retry later", code="model_overloaded"
                )
            if refusal is not None:
                self._other(self.send(error_to_frame(wire_id, refusal)))
                return
            task = asyncio.get_running_loop().create_task(self._quietly(self._generate(wire_id, frame)))
            self.requests[wire_id] = task
            task.add_done_callback(lambda _: self.requests.pop(wire_id, None))
        else:
            raise ProtocolError(f"unexpected {kind!r} frame from the gateway")

    def _other(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(work))
        self._others.add(task)
        task.add_done_callback(self._others.discard)

    @staticmethod
    async def _quietly(work: Awaitable[None]) -> None:
        """Run ``work``; a connection that went away meanwhile is not an error of the request."""
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            await work

    async def _generate(self, wire_id: str, frame: Frame) -> None:
        name = frame.get("model")
        model = self.host.models.get(name) if isinstance(name, str) else None
        if model is None:  # a gateway configured for a host that does not serve the model
            missing = WorkerUnavailable("this worker host does not serve that model", code="model_not_found")
            await self.send(error_to_frame(wire_id, missing))
            return
        try:
            request = request_from_frame(frame)
        except (ProtocolError, ValueError, OverflowError) as exc:
            await self.send(error_to_frame(wire_id, WorkerRequestError(f"malformed request: {exc}")))
            return
        owed: asyncio.Future[Frame] | None = None
        try:
            async with contextlib.aclosing(model.generate(request)) as events:
                async for event in events:
                    if owed is None and request.explain is not None:
                        owed = model.explanation(request.id)  # while it is being served
                    await self.send(event_to_frame(wire_id, event))
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
        except Exception:  # a bug here must still end the request, or the gateway waits forever
            log.exception("worker host: request %s failed", wire_id)
            failed = WorkerRequestError("the worker host failed while generating", code="generation_failed")
            await self.send(error_to_frame(wire_id, failed))
            return
        if owed is not None:
            explained = await owed
            await self.send({**explained, "id": wire_id})


class WorkerHost:
    """The TLS listener in front of ``models`` (``ModelPool.models``). ``start`` then ``stop``."""

    def __init__(
        self,
        models: Mapping[str, HostedModel],
        tls: ssl.SSLContext,
        host: str,
        port: int,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.models = models
        self.idle_timeout_s = idle_timeout_s
        self.draining = False
        self._tls = tls
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: dict[_Connection, asyncio.Future[None]] = {}

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def in_flight(self) -> int:
        return sum(len(c.requests) for c in self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, ssl=self._tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
        )
        log.info("worker host listening on %s:%d (mutual TLS)", self._host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not peer_has_usage(writer, CLIENT_AUTH):  # OpenSSL lets a certificate without EKU through
            log.warning("worker host: refused a peer whose certificate is not for client authentication")
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a gateway that vanishes is noticed even while nothing is in flight
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(x[0] for x in peer.get("subject", ()))
        log.info("worker host: gateway %r connected", subject.get("commonName", "?"))
        connection = _Connection(self, reader, writer)
        self._connections[connection] = asyncio.get_running_loop().create_future()
        try:
            await connection.run()
        finally:
            self._connections.pop(connection).set_result(None)

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop taking connections and new requests; let those in flight finish for up to
        ``drain_s`` seconds; end the rest (503 worker_stopped) and close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.1)
        closing = list(self._connections.items())
        await asyncio.gather(*(c.abort() for c, _ in closing), return_exceptions=True)
        if closing:
            await asyncio.wait([done for _, done in closing], timeout=10)
        if self._server is not None:
            await self._server.wait_closed()
