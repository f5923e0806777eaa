"""The gateway side of remote workers: one model served by worker hosts over mutual TLS.

``RemoteModel`` keeps one TLS connection per endpoint (an address of a worker host), from the
configuration or from DNS (every address a name resolves to: a Kubernetes headless Service,
re-resolved every ``dns_refresh_s``). Requests share the connection (``wire.py``).

- **Balancing**: each request goes to the *ready* endpoint with the fewest requests in flight
  (ties in turn).
- **Health**: an endpoint is ready once connected and its first ping is answered with the
  model in a usable state; it is pinged every ``health_interval_s`` and must answer within
  ``health_timeout_s``.
- **Ejection**: a failed connect, a connection error, a missed pong or a host reporting the
  model unhealthy ejects the endpoint: its requests in flight fail at once with 503
  ``worker_host_lost`` (they may or may not have run; the gateway never retries them), and no
  new request goes there. It is tried again after a backoff (doubling up to
  ``eject_backoff_max_s``) and **re-admitted** once a connection and a ping succeed.
- With no ready endpoint, requests fail at once with 503 ``no_worker_host``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import WorkerRequestError, WorkerUnavailable
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest
from sandbox.owed import OwedExplanations, explanation_frame
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    event_from_frame,
    read_frame,
    request_to_frame,
)
from sandbox.remote.tls import SERVER_AUTH, peer_has_usage
from sandbox.remote.wire import error_from_frame
from sandbox.tasks import cancel_and_wait

log = logging.getLogger("llmos.sandbox.remote")

EndpointState = Literal["connecting", "ready", "draining", "ejected", "stopped"]
UNUSABLE_STATES = frozenset({"unhealthy", "stopped", "refused"})
RETIRE_GRACE_S = 60.0  # an endpoint that left DNS: how long its requests in flight may finish


@dataclass(frozen=True)
class RemoteSettings:
    endpoints: tuple[tuple[str, int], ...] = ()
    dns: tuple[str, int] | None = None
    server_name: str | None = None  # the name worker certificates must carry (default: endpoint host)
    connect_timeout_s: float = 5.0
    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0
    eject_backoff_initial_s: float = 0.5
    eject_backoff_max_s: float = 30.0
    dns_refresh_s: float = 10.0


@dataclass
class _Request:
    queue: asyncio.Queue[GenerateEvent | Exception] = field(default_factory=asyncio.Queue)


def _lost(endpoint: str) -> WorkerUnavailable:
    return WorkerUnavailable(
        f"the worker host {endpoint} was lost while serving this request; retry", code="worker_host_lost"
    )


class _Endpoint:
    """One worker host address: its connection, health and requests in flight."""

    def __init__(self, model: RemoteModel, host: str, port: int) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.name = f"{host}:{port}"
        self.state: EndpointState = "connecting"
        self.pending: dict[str, _Request] = {}
        self.failures = 0
        self.ejections = 0
        self.last_error: str | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pongs: dict[int, asyncio.Future[Frame]] = {}
        self._ping_ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        # Set by stop() before it cancels the supervisor; the loops check it too, because on
        # Python 3.11 asyncio.wait_for can swallow a cancellation that comes as its awaitable
        # finishes, and the supervisor would then go on (and stop() wait) forever.
        self._stopped = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"llmos-remote-{self.name}"
        )

    async def stop(self, error: WorkerUnavailable | None = None) -> None:
        """Close; requests still in flight fail with ``error`` (default: the gateway stops)."""
        self.state = "stopped"
        self._stopped = True
        try:
            if self._task is not None:
                await cancel_and_wait(self._task)  # a cancel of this stop() is not swallowed
        finally:  # and even then the connection is closed and its requests answered
            self._close()
            self._fail_pending(error or WorkerUnavailable("the gateway is stopping", code="worker_stopped"))
            self.model.host_lost(self)

    async def retire(self, grace_s: float) -> None:
        """Left DNS (its pod is going away): no new requests; those in flight get ``grace_s``."""
        self.state = "draining"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.pending and loop.time() < deadline and self._task is not None and not self._task.done():
            await asyncio.sleep(0.1)
        await self.stop(_lost(self.name))

    def send(self, frame: Frame) -> None:
        self.send_data(encode_frame(frame))

    def send_data(self, data: bytes) -> None:
        """For requests: a closed connection is 503 worker_host_lost."""
        try:
            self._write(data)
        except ConnectionError as exc:
            raise _lost(self.name) from exc

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the connection to the worker host is closed")
        self._writer.write(data)

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        settings = self.model.settings
        while not self._stopped:
            try:
                await self._connected_session()
                return  # it returns only once stop() has begun; stop() does the rest
            except asyncio.CancelledError:
                self._close()
                raise
            except (OSError, ssl.SSLError, ProtocolError, TimeoutError, _Unusable) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            except Exception as exc:  # a bug must not end supervision with requests waiting
                log.exception(
                    "remote model %r: worker host %s: unexpected failure", self.model.name, self.name
                )
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._stopped:  # a cancellation lost on the way (see __init__): stop() goes on
                return
            was_ready = self.state in ("ready", "draining")
            self.state = "ejected"
            self._close()
            self._fail_pending(_lost(self.name))
            self.model.host_lost(self)
            self.failures += 1
            if was_ready:
                self.ejections += 1
                log.warning(
                    "remote model %r: worker host %s ejected (%s)",
                    self.model.name,
                    self.name,
                    self.last_error,
                )
            delay = min(
                settings.eject_backoff_max_s,
                settings.eject_backoff_initial_s * 2 ** min(self.failures - 1, 16),
            )
            await asyncio.sleep(delay)
            if not self._stopped:
                self.state = "connecting"

    async def _connected_session(self) -> None:
        settings = self.model.settings
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.model.tls,
                server_hostname=settings.server_name or self.host,
                ssl_handshake_timeout=settings.connect_timeout_s,
            ),
            settings.connect_timeout_s,
        )
        self._writer = writer
        if not peer_has_usage(writer, SERVER_AUTH):  # OpenSSL lets a certificate without EKU through
            raise _Unusable("the worker host's certificate is not for server authentication")
        reading = asyncio.get_running_loop().create_task(self._read(reader))
        try:
            await self._check_health()
            self.failures = 0
            while not self._stopped:
                await asyncio.wait({reading}, timeout=settings.health_interval_s)
                if reading.done():
                    reading.result()  # its error, if it failed
                    raise ConnectionError("the worker host closed the connection")
                await self._check_health()
        finally:
            await cancel_and_wait(reading)  # a stop() arriving meanwhile is not swallowed

    async def _check_health(self) -> None:
        ping = next(self._ping_ids)
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pongs[ping] = waiter
        try:
            self._write(encode_frame({"type": "ping", "id": ping}))
            pong = await asyncio.wait_for(waiter, self.model.settings.health_timeout_s)
        finally:
            self._pongs.pop(ping, None)
        models = pong.get("models")
        state = models.get(self.model.name) if isinstance(models, dict) else None
        if not isinstance(state, str):
            raise _Unusable(f"the worker host does not serve model {self.model.name!r}")
        if state in UNUSABLE_STATES:
            raise _Unusable(f"the worker host reports model {self.model.name!r} {state}")
        if self.state == "stopped":
            return
        if pong.get("draining") is True:  # it is stopping: nothing new, its requests may finish
            if self.state != "draining":
                log.info("remote model %r: worker host %s is draining", self.model.name, self.name)
            self.state = "draining"
        elif self.state != "ready":
            log.info("remote model %r: worker host %s is ready", self.model.name, self.name)
            self.state = "ready"

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            frame = await read_frame(reader)
            if frame is None:
                return
            self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        wire_id = frame.get("id")
        if kind == "pong":
            waiter = self._pongs.get(wire_id) if isinstance(wire_id, int) else None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
            return
        if not isinstance(wire_id, str):
            raise ProtocolError(f"a {kind!r} frame without a request id")
        if kind == "explanation":
            self.model.explained(wire_id.rsplit("#", 1)[0], frame)
            return
        pending = self.pending.get(wire_id)
        if kind in ("token", "done"):
            event = event_from_frame(frame)
            if pending is not None:
                pending.queue.put_nowait(event)
                if kind == "done":
                    del self.pending[wire_id]
        elif kind == "error":
            if pending is not None:
                del self.pending[wire_id]
                pending.queue.put_nowait(error_from_frame(frame))
        else:
            raise ProtocolError(f"unexpected {kind!r} frame from the worker host")

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for waiter in self._pongs.values():
            if not waiter.done():
                waiter.cancel()

    def _fail_pending(self, error: Exception) -> None:
        pending, self.pending = self.pending, {}
        for request in pending.values():
            request.queue.put_nowait(error)

    def status(self) -> dict[str, Any]:
        return {
            "endpoint": self.name,
            "state": self.state,
            "outstanding": len(self.pending),
            "ejections": self.ejections,
            "last_error": self.last_error,
        }


class _Unusable(Exception):
    """The host answered, but cannot serve this model now."""


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (checked by the configuration) as a pair."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


Resolver = Callable[[str, int], Coroutine[Any, Any, list[tuple[str, int]]]]


async def resolve(host: str, port: int) -> list[tuple[str, int]]:
    """Every address ``host`` resolves to (TCP), in a stable order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({(str(info[4][0]), int(info[4][1])) for info in infos})


class RemoteModel:
    """A model whose workers run on worker hosts (``models[].kind: remote``)."""

    remote = False  # its workers are ours (sandboxed, on another host): they attribute as local ones
    pinned = False  # /readyz does not wait for worker hosts; their health shows per request and in status

    def __init__(
        self, name: str, settings: RemoteSettings, tls: ssl.SSLContext, *, resolver: Resolver = resolve
    ) -> None:
        if not settings.endpoints and settings.dns is None:
            raise ValueError("a remote model needs endpoints or a DNS name")
        self.name = name
        self.settings = settings
        self.tls = tls
        self._resolver = resolver
        self._endpoints: dict[tuple[str, int], _Endpoint] = {}
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._explaining: OwedExplanations[_Endpoint] = OwedExplanations()
        self._dns_task: asyncio.Task[None] | None = None
        self._retiring: set[_Endpoint] = set()
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        for host, port in self.settings.endpoints:
            self._add(host, port)
        if self.settings.dns is not None:
            await self._refresh()
            self._dns_task = asyncio.get_running_loop().create_task(
                self._follow_dns(), name=f"llmos-dns-{self.name}"
            )

    async def stop(self) -> None:
        self._stopping = True
        if self._dns_task is not None:
            await cancel_and_wait(self._dns_task)
        await asyncio.gather(*(e.stop() for e in [*self._endpoints.values(), *self._retiring]))

    def _add(self, host: str, port: int) -> None:
        endpoint = _Endpoint(self, host, port)
        self._endpoints[(host, port)] = endpoint
        endpoint.start()

    async def _follow_dns(self) -> None:
        while True:
            await asyncio.sleep(self.settings.dns_refresh_s)
            await self._refresh()

    async def _refresh(self) -> None:
        assert self.settings.dns is not None
        try:
            found = set(await self._resolver(*self.settings.dns))
        except Exception as exc:  # keep what we have; the next refresh tries again
            log.warning("remote model %r: cannot resolve %s (%s)", self.name, self.settings.dns[0], exc)
            return
        for address in found - self._endpoints.keys():
            log.info("remote model %r: worker host %s:%d appeared in DNS", self.name, *address)
            self._add(*address)
        for address in self._endpoints.keys() - found:
            log.info("remote model %r: worker host %s:%d left DNS", self.name, *address)
            leaving = self._endpoints.pop(address)
            self._retiring.add(leaving)
            task = asyncio.get_running_loop().create_task(self._retire(leaving))
            self._retire_tasks.add(task)
            task.add_done_callback(self._retire_tasks.discard)

    async def _retire(self, endpoint: _Endpoint) -> None:
        try:
            await endpoint.retire(RETIRE_GRACE_S)
        finally:
            self._retiring.discard(endpoint)

    # -- serving -----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._stopping:
            return "stopped"
        if any(e.state == "ready" for e in self._endpoints.values()):
            return "ready"
        return "unavailable"

    @property
    def outstanding(self) -> int:
        return sum(len(e.pending) for e in [*self._endpoints.values(), *self._retiring])

    def status(self) -> list[dict[str, Any]]:
        return [e.status() for e in self._endpoints.values()]

    def _choose(self) -> _Endpoint:
        ready = [e for e in self._endpoints.values() if e.state == "ready"]
        if not ready:
            raise WorkerUnavailable(
                f"no worker host for model {self.name!r} is reachable; retry later", code="no_worker_host"
            )
        least = min(len(e.pending) for e in ready)
        candidates = [e for e in ready if len(e.pending) == least]
        return candidates[next(self._turn) % len(candidates)]

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        """Stream the events of ``request`` from the least busy ready worker host. Raises
        WorkerUnavailable (``no_worker_host``, ``worker_host_lost``, or the host's own) or
        WorkerRequestError. Closing the generator early cancels the request on the host."""
        if self._stopping:
            raise WorkerUnavailable("the gateway is stopping", code="worker_stopped")
        endpoint = self._choose()
        wire_id = f"{request.id}#{next(self._ids)}"
        try:
            frame = {**request_to_frame(wire_id, request), "model": self.name}
            data = encode_frame(frame)
        except ProtocolError as exc:
            raise WorkerRequestError("the request is too large for the model worker") from exc
        pending = _Request()
        if request.explain is not None:
            self._explaining.expect(request.id, endpoint)
        endpoint.pending[wire_id] = pending
        finished = answered = False
        try:
            endpoint.send_data(data)
            while True:
                item = await pending.queue.get()
                if isinstance(item, Exception):
                    finished = True
                    raise item
                finished = answered = isinstance(item, DoneEvent)
                yield item
                if finished:
                    return
        finally:
            if not answered:
                self._explaining.resolve(request.id, explanation_frame("not_applicable", "not_generated"))
            if endpoint.pending.pop(wire_id, None) is not None and not finished:
                with contextlib.suppress(WorkerUnavailable):
                    endpoint.send({"type": "cancel", "id": wire_id})

    def explanation(self, request_id: str) -> asyncio.Future[Frame] | None:
        """The ``explanation`` frame the worker host owes for ``request_id`` (asked with
        ``explain``), to await once the answer was sent; None if it owes none. Taken once."""
        return self._explaining.claim(request_id)

    def explained(self, request_id: str, frame: Frame) -> None:
        self._explaining.resolve(request_id, frame)

    def host_lost(self, endpoint: _Endpoint) -> None:
        """Explanations owed by a lost host will not come: say so to whoever waits."""
        self._explaining.lost(endpoint, "worker_host_lost")
