"""The gateway side of a model worker: spawn, supervise, restart, and stream requests.

``ModelWorker`` owns one worker subprocess at a time. A supervision task spawns it, waits for
its ``ready`` frame, routes frames to the requests waiting on them, and when the process dies
fails every request it held with ``WorkerUnavailable(code="worker_crashed")`` and starts a new
one after an exponential backoff (reset once a worker has stayed ready for a while).

Admission: all admitted requests are sent to the worker, which decodes up to ``max_batch`` of
them together (``sandbox.batching``) and queues the rest in order. A request counts as
outstanding from admission until the worker answers it with a terminal frame (or dies); when
more than ``max_queue`` are outstanding besides the running one,
new requests are refused at once with ``code="model_overloaded"``.

Containment: a worker that holds requests and sends nothing for ``request_timeout_s`` is hung:
it is killed, its oldest request fails with ``WorkerTimeout`` (504) and the others with
``worker_crashed`` (503). After ``unhealthy_after_failures`` failures in a row (failed starts,
or workers that died before ``healthy_after_s``), the model is *unhealthy*: requests are refused
at once with ``code="model_unhealthy"`` (503, Retry-After the next restart) instead of waiting
for a start that keeps failing, until a worker is ready again. Lifecycle events go to
``on_event`` (``sandbox.events``) for the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import WorkerRequestError, WorkerTimeout, WorkerUnavailable
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest
from sandbox.events import WorkerEvent, WorkerEventKind, exit_reason, safe_code
from sandbox.isolation import IsolationReport
from sandbox.manifest import ManifestError, verify_model_dir
from sandbox.owed import OwedExplanations, explanation_frame
from sandbox.process import WorkerProcess, WorkerSpec, reap_worker, spawn_worker
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    event_from_frame,
    read_frame,
    request_to_frame,
)
from sandbox.tasks import cancel_and_wait

__all__ = ["ModelWorker", "WorkerSpec", "WorkerState", "next_backoff"]

log = logging.getLogger("llmos.sandbox")

WorkerState = Literal["starting", "ready", "backoff", "unhealthy", "stopped"]


@dataclass
class _Pending:
    queue: asyncio.Queue[GenerateEvent | Exception] = field(default_factory=asyncio.Queue)
    process: WorkerProcess | None = None  # set once the request was sent
    sent_at: float = 0.0  # event-loop time it was sent


def next_backoff(spec: WorkerSpec, previous: float | None, ready_for_s: float | None) -> float:
    """Delay before the next start after a worker ended.

    ``previous`` is the last delay (None before the first restart); ``ready_for_s`` how long the
    worker that just ended had been ready (None if it never was). A worker that stayed ready for
    ``healthy_after_s`` starts the sequence over; otherwise the delay doubles up to the maximum.
    """
    healthy = ready_for_s is not None and ready_for_s >= spec.healthy_after_s
    if previous is None or healthy:
        return spec.restart_backoff_initial_s
    return min(previous * 2, spec.restart_backoff_max_s)


class ModelWorker:
    """One supervised model worker; all methods must run on the same event loop."""

    def __init__(self, spec: WorkerSpec, *, on_event: Callable[[WorkerEvent], None] | None = None) -> None:
        self.spec = spec
        self.restarts = 0
        self.failures = 0  # failed starts or short-lived workers in a row
        self.unhealthy = False
        self._on_event = on_event
        self._retry_at: float | None = None  # event-loop time of the next start, while backing off
        self.manifest_digest: str | None = None  # the signed manifest last verified (sandbox.manifest)
        self.isolation: IsolationReport | None = None
        self.context_length: int | None = None
        self.last_error: str | None = None  # operator-facing reason of the last failed start
        self._state: WorkerState = "stopped"
        self._process: WorkerProcess | None = None
        self._pending: dict[str, _Pending] = {}
        # request id -> (the worker's explanation frame to come, the process that owes it)
        self._explaining: OwedExplanations[WorkerProcess] = OwedExplanations()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._load_failed = False  # the last start ended in a fatal frame: fail fast, don't wait
        self._changed = asyncio.Event()

    # -- public --------------------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        return self._state

    @property
    def outstanding(self) -> int:
        """Requests admitted and not yet answered (what draining waits for)."""
        return len(self._pending)

    @property
    def on_event(self) -> Callable[[WorkerEvent], None] | None:
        return self._on_event

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.alive else None

    async def start(self) -> None:
        """Spawn the worker and its supervisor; returns at once (see ``wait_ready``)."""
        if self._task is not None:
            return
        self._stopping = False
        self._load_failed = False
        self.unhealthy, self.failures = False, 0  # a fresh start (say, a reload after eviction)
        self._set_state("starting")
        self._task = asyncio.create_task(self._supervise(), name=f"llmos-worker-{self.spec.name}")

    async def wait_ready(self, timeout: float) -> None:
        """Return once a worker is ready; WorkerUnavailable on timeout, load failure or stop."""
        await self._ready_process(timeout)

    async def stop(self) -> None:
        """Shut the worker down (killing it after ``stop_timeout_s``) and fail what it still held."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._notify()
        process = self._process
        if process is not None:
            if self._state == "ready":
                with contextlib.suppress(OSError):
                    process.send_nowait({"type": "shutdown"})
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.spec.stop_timeout_s)
        except TimeoutError:
            log.warning("model worker %r did not stop in time; killing it", self.spec.name)
            if (process := self._process) is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.proc.kill()
            await task
        self._task = None
        for pending in self._pending.values():
            pending.queue.put_nowait(self._stopped_error())
        self._pending.clear()
        self._explaining.lost(None, "worker_error")
        self._set_state("stopped")

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        """Stream TokenEvents then one DoneEvent for ``request``.

        Raises WorkerUnavailable (codes ``model_overloaded``, ``worker_not_ready``,
        ``worker_crashed``, ``worker_stopped``) or WorkerRequestError (the worker's code, e.g.
        ``context_length_exceeded``). Closing the generator early cancels the request.
        """
        if self._task is None or self._stopping:
            raise self._stopped_error()
        if len(self._pending) > self.spec.max_queue:
            raise WorkerUnavailable(
                f"model {self.spec.name!r} is overloaded; retry later", code="model_overloaded"
            )
        wire_id = f"{request.id}#{next(self._ids)}"
        try:
            data = encode_frame(request_to_frame(wire_id, request))
        except ProtocolError as exc:
            raise WorkerRequestError("the request is too large for the model worker") from exc
        pending = _Pending()
        self._pending[wire_id] = pending
        finished = answered = False
        if request.explain is not None:
            self._explaining.expect(request.id)
        try:
            process = await self._ready_process(self.spec.start_timeout_s)
            process.writer.write(data)
            pending.process = process
            self._explaining.owed_by(request.id, process)
            pending.sent_at = asyncio.get_running_loop().time()
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
            if not answered:  # no answer: nothing to explain
                self._explaining.resolve(request.id, explanation_frame("not_applicable", "not_generated"))
            if pending.process is None or finished:
                self._pending.pop(wire_id, None)
            elif pending.process.alive:
                # the consumer went away mid-stream; the worker answers with a terminal frame
                pending.process.send_nowait({"type": "cancel", "id": wire_id})

    def explanation(self, request_id: str) -> asyncio.Future[Frame] | None:
        """The ``explanation`` frame the worker owes for ``request_id`` (asked with ``explain``),
        to await once the answer was sent; None if it owes none. Taken once: a second call
        gets None. The frame's ``status`` says ``ok`` (with ``attribution``) or why not."""
        return self._explaining.claim(request_id)

    # -- supervision ---------------------------------------------------------------------------

    def _set_state(self, state: WorkerState) -> None:
        self._state = state
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _stopped_error(self) -> WorkerUnavailable:
        return WorkerUnavailable(f"model worker for {self.spec.name!r} is stopped", code="worker_stopped")

    async def _ready_process(self, timeout: float) -> WorkerProcess:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._task is None or self._stopping:
                raise self._stopped_error()
            process = self._process
            if self._state == "ready" and process is not None and process.alive:
                return process
            if self._load_failed:
                raise WorkerUnavailable(
                    f"model {self.spec.name!r} could not be loaded; the operator log has the reason",
                    code="worker_not_ready",
                )
            if self.unhealthy:
                raise WorkerUnavailable(
                    f"model {self.spec.name!r} is unhealthy (its worker keeps failing); retry later",
                    code="model_unhealthy",
                    retry_after=self._retry_after(loop.time()),
                )
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                raise WorkerUnavailable(
                    f"model worker for {self.spec.name!r} is not ready; retry later", code="worker_not_ready"
                ) from None

    async def _supervise(self) -> None:
        backoff: float | None = None
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._set_state("starting")
            ready_since: float | None = None
            try:
                await self._verify_manifest()
                process = await spawn_worker(self.spec)
                log.info("model worker %r spawned (pid %d)", self.spec.name, process.pid)
            except ManifestError as exc:
                self.last_error = f"refusing to load the model: {exc}"
                self._load_failed = True
                log.error("model worker %r: %s", self.spec.name, self.last_error)
                self._emit("refused", "worker_refused", exc.code)
            except Exception as exc:  # supervision boundary: a failed start, never a dead supervisor
                self.last_error = f"could not start the worker process: {type(exc).__name__}: {exc}"
                log.error("model worker %r: %s", self.spec.name, self.last_error)
            else:
                self._process = process
                if self._stopping:  # stop() came while spawning
                    process.proc.terminate()
                try:
                    ready_since = await self._serve(process)
                except Exception:  # supervision boundary: log, restart, keep the gateway serving
                    log.exception("model worker %r: supervision error", self.spec.name)
                finally:
                    await self._teardown(process)
            if self._stopping:
                break
            ready_for = None if ready_since is None else loop.time() - ready_since
            backoff = next_backoff(self.spec, backoff, ready_for)
            self._count_failure(ready_for)
            self.restarts += 1
            self._retry_at = loop.time() + backoff
            self._set_state("unhealthy" if self.unhealthy else "backoff")
            log.warning(
                "model worker %r stopped; restart #%d in %.1f s", self.spec.name, self.restarts, backoff
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_stopping(), backoff)
            self._retry_at = None

    async def _verify_manifest(self) -> None:
        """Before each start: the model directory must match a manifest signed by a trusted
        release key (hashing the weights runs in a thread). Sets ``manifest_digest``."""
        spec = self.spec
        if spec.model_dir is None or not spec.trusted_keys:
            return
        manifest = await asyncio.to_thread(verify_model_dir, spec.model_dir, spec.trusted_keys)
        if manifest.digest != self.manifest_digest:
            log.info("model %r: manifest %s verified", spec.name, manifest.digest)
        self.manifest_digest = manifest.digest

    def _count_failure(self, ready_for: float | None) -> None:
        """A worker ended: a failure in a row unless it had been healthy; maybe now unhealthy."""
        healthy = ready_for is not None and ready_for >= self.spec.healthy_after_s
        self.failures = 1 if healthy else self.failures + 1
        if not self.unhealthy and self.failures >= self.spec.unhealthy_after_failures:
            self.unhealthy = True
            log.error(
                "model %r is unhealthy: %d worker failures in a row; refusing its requests until a"
                " worker is ready again",
                self.spec.name,
                self.failures,
            )
            self._emit("unhealthy", "model_unhealthy", f"failures_{self.failures}")

    def _retry_after(self, now: float) -> int:
        """Seconds until the next start, for Retry-After (at least 1)."""
        return max(1, math.ceil(self._retry_at - now)) if self._retry_at is not None else 1

    def _emit(self, kind: WorkerEventKind, *reasons: str, pid: int | None = None) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(WorkerEvent(kind, self.spec.name, reasons, pid))
        except Exception:  # a recorder bug must not stop supervision
            log.exception("model worker %r: recording the %s event failed", self.spec.name, kind)

    async def _wait_stopping(self) -> None:
        while not self._stopping:
            await self._changed.wait()

    async def _serve(self, process: WorkerProcess) -> float | None:
        """Wait for ready, then route frames until the channel closes; return when it became ready."""
        name = self.spec.name
        try:
            frame = await asyncio.wait_for(read_frame(process.reader), self.spec.start_timeout_s)
        except TimeoutError:
            self.last_error = f"the worker did not become ready within {self.spec.start_timeout_s:.0f} s"
            log.error("model worker %r: %s", name, self.last_error)
            return None
        except (ProtocolError, OSError) as exc:
            self.last_error = f"channel error before ready: {exc}"
            log.error("model worker %r: %s", name, self.last_error)
            return None
        if self._stopping and (frame is None or frame.get("type") != "ready"):
            return None  # stop() ended it during start-up: not a failure
        if frame is None or frame.get("type") != "ready":
            if frame is not None and frame.get("type") == "fatal":
                self.last_error = str(frame.get("message"))
                self._load_failed = True
                self._emit(
                    "refused", "worker_refused", safe_code(frame.get("code"), "worker_fatal"), pid=process.pid
                )
            else:
                self.last_error = "the worker exited before it was ready (see its log)"
            log.error("model worker %r failed to start: %s", name, self.last_error)
            return None
        context_length = frame.get("context_length")
        self.context_length = context_length if isinstance(context_length, int) else None
        isolation = frame.get("isolation")
        self.isolation = IsolationReport.from_dict(isolation) if isinstance(isolation, dict) else None
        self._warn_degraded()
        self.last_error = None
        self._load_failed = False
        ready_since = asyncio.get_running_loop().time()
        self._set_state("ready")
        log.info("model worker %r ready (pid %d)", name, process.pid)
        missing = () if self.isolation is None else self.isolation.missing()
        self._emit(
            "ready",
            "worker_ready",
            *(f"sandbox_missing_{layer.name}" for layer in missing),
            *(("sandbox_report_missing",) if self.isolation is None else ()),
            pid=process.pid,
        )
        if self.unhealthy:
            self.unhealthy = False
            log.info("model %r is healthy again", name)
            self._emit("recovered", "model_recovered", pid=process.pid)
        watchdog = asyncio.create_task(self._watch(process), name=f"llmos-watchdog-{name}")
        process.last_frame_at = ready_since
        try:
            while (frame := await read_frame(process.reader)) is not None:
                process.last_frame_at = asyncio.get_running_loop().time()
                self._dispatch(frame)
        except (ProtocolError, OSError) as exc:
            log.error("model worker %r: bad channel, restarting it: %s", name, exc)
        finally:
            await cancel_and_wait(watchdog)  # a cancel of this task arriving meanwhile is not swallowed
        return ready_since

    async def _watch(self, process: WorkerProcess) -> None:
        """Kill the worker if it holds requests and has sent nothing for ``request_timeout_s``;
        its oldest request gets WorkerTimeout (504), the rest fail at teardown (503)."""
        limit = self.spec.request_timeout_s
        loop = asyncio.get_running_loop()
        while process.alive:
            await asyncio.sleep(min(1.0, limit / 4))
            held = [(p.sent_at, wire_id) for wire_id, p in self._pending.items() if p.process is process]
            if not held:
                continue
            oldest_at, oldest = min(held)
            if loop.time() - max(process.last_frame_at, oldest_at) < limit:
                continue
            log.error(
                "model worker %r (pid %d) sent nothing for %.0f s while holding %d request(s): hung;"
                " killing it",
                self.spec.name,
                process.pid,
                limit,
                len(held),
            )
            self._emit("hung", "worker_hung", pid=process.pid)
            pending = self._pending.pop(oldest)
            pending.queue.put_nowait(
                WorkerTimeout(
                    f"model {self.spec.name!r} did not answer within {limit:.0f} s", code="model_timeout"
                )
            )
            with contextlib.suppress(ProcessLookupError):
                process.proc.kill()
            return

    def _warn_degraded(self) -> None:
        """One warning per isolation layer the worker lacks (strict mode refused those already)."""
        if self.isolation is None:
            log.warning("model worker %r sent no isolation report", self.spec.name)
            return
        for layer in self.isolation.missing():
            log.warning(
                "model worker %r runs without isolation layer %s (%s: %s)",
                self.spec.name,
                layer.name,
                layer.status,
                layer.detail,
            )

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        wire_id = frame.get("id")
        pending = self._pending.get(wire_id) if isinstance(wire_id, str) else None
        if kind in ("token", "done"):
            event = event_from_frame(frame)
            if pending is not None:
                pending.queue.put_nowait(event)
                if kind == "done":
                    del self._pending[str(wire_id)]
        elif kind == "explanation":
            request_id = wire_id.rsplit("#", 1)[0] if isinstance(wire_id, str) else ""
            self._explaining.resolve(request_id, frame)
        elif kind == "error":
            code = frame.get("code")
            message = frame.get("message")
            if pending is None:
                return
            del self._pending[str(wire_id)]
            if code == "cancelled":  # not asked for by this consumer: the worker is shutting down
                pending.queue.put_nowait(self._stopped_error())
                return
            pending.queue.put_nowait(
                WorkerRequestError(
                    message if isinstance(message, str) else "the model worker refused the request",
                    code=code if isinstance(code, str) else "generation_failed",
                )
            )
        else:
            raise ProtocolError(f"unexpected {kind!r} frame from the worker")

    async def _teardown(self, process: WorkerProcess) -> None:
        process.alive = False  # first, so no new request is sent to it
        if not self._stopping:
            self._set_state("backoff")
        self._explaining.lost(process, "worker_error")
        for wire_id, pending in list(self._pending.items()):
            if pending.process is process:
                del self._pending[wire_id]
                pending.queue.put_nowait(
                    self._stopped_error()
                    if self._stopping
                    else WorkerUnavailable(
                        f"model worker for {self.spec.name!r} stopped unexpectedly; it is being restarted",
                        code="worker_crashed",
                    )
                )
        returncode = await reap_worker(process, self.spec.stop_timeout_s if self._stopping else 1.0)
        if self._process is process:
            self._process = None
        log.info("model worker %r (pid %d) exited with %d", self.spec.name, process.pid, returncode)
        if not self._stopping:
            self._emit("exited", "worker_exited", exit_reason(returncode), pid=process.pid)
