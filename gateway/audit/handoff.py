"""The hand-off between the audit log's callers and its one writer thread.

A caller puts a :class:`Job` (an append's prepared entry, or a checkpoint request) and waits
for its answer: a thread on a ``concurrent.futures.Future``, a coroutine on an asyncio future
of its own event loop (resolved with one call into that loop per batch, not one per job). At
most ``max_pending`` jobs are queued or being written: :meth:`Handoff.put` waits for room
(backpressure) and never drops a job. :meth:`Handoff.close` refuses new jobs and queues the
stop marker behind every accepted one, so every accepted job is answered.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Generic, TypeVar

from gateway.errors import AuditError

log = logging.getLogger("llmos.gateway.audit")

P = TypeVar("P")  # what a job carries to the writer
A = TypeVar("A")  # what the writer answers


class Job(Generic[P, A]):
    """One request to the writer (``payload``) and where its answer goes: ``future`` for a
    thread, ``waiter`` for a coroutine on ``loop``. A ``lazy`` job may wait a little for other
    work to share its write (the writer decides how long)."""

    __slots__ = ("future", "lazy", "loop", "payload", "waiter")

    def __init__(
        self, payload: P, loop: asyncio.AbstractEventLoop | None = None, *, lazy: bool = False
    ) -> None:
        self.payload = payload
        self.loop = loop
        self.lazy = lazy
        self.future: Future[A] | None = None
        self.waiter: asyncio.Future[A] | None = None
        if loop is None:
            self.future = Future()
        else:
            self.waiter = loop.create_future()


def _settle(replies: list[tuple[asyncio.Future[A], A | BaseException]]) -> None:
    """On the waiters' event loop: hand each coroutine its answer (a cancelled one has left)."""
    for waiter, answer in replies:
        if waiter.done():
            continue
        if isinstance(answer, BaseException):
            waiter.set_exception(answer)
        else:
            waiter.set_result(answer)


class Handoff(Generic[P, A]):
    """Jobs from any thread or event loop to one consumer thread; see the module docstring.

    ``name`` says what is closed in the error a caller gets after :meth:`close`."""

    def __init__(self, max_pending: int, name: str) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._name = name
        self._queue: queue.SimpleQueue[Job[P, A] | None] = queue.SimpleQueue()
        self._max_pending = max_pending
        self._pending = 0
        # "Is it open, is there room?" and "enqueue" are one step under the gate, so close()
        # cannot slip in between and leave a job behind the stop marker.
        self._gate = threading.Condition(threading.Lock())
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Jobs accepted and not yet answered."""
        return self._pending

    def put(self, job: Job[P, A], *, wait: bool = True) -> bool:
        """Queue ``job`` once there is room (blocking while ``max_pending`` jobs wait, unless
        not ``wait``: then False). AuditError once closed."""
        with self._gate:
            while not self._closed and self._pending >= self._max_pending:
                if not wait:
                    return False
                self._gate.wait()
            if self._closed:
                raise AuditError(f"{self._name} is closed")
            self._pending += 1
            self._queue.put(job)
        return True

    def get(self, timeout: float | None = None) -> Job[P, A] | None:
        """The next job, or None for the stop marker (nothing follows it); ``queue.Empty``
        after ``timeout`` seconds (0: do not wait)."""
        if timeout == 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def reply(self, replies: list[tuple[Job[P, A], A | BaseException]]) -> None:
        """Answer jobs (threads directly, the coroutines of one event loop with one call into
        it), then make room for as many new ones."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[A], A | BaseException]]] = {}
        for job, answer in replies:
            if job.future is not None:
                if isinstance(answer, BaseException):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)
            elif job.loop is not None and job.waiter is not None:
                by_loop.setdefault(job.loop, []).append((job.waiter, answer))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # the loop was closed: nobody is waiting any more
                log.debug("audit: an event loop closed before %d appends were answered", len(items))
        if replies:
            with self._gate:
                self._pending -= len(replies)
                self._gate.notify(len(replies))

    def close(self) -> bool:
        """Refuse new jobs and queue the stop marker behind the accepted ones; callers waiting
        for room are refused. False if it was closed already."""
        with self._gate:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(None)
            self._gate.notify_all()
        return True
