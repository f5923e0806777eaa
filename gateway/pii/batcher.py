"""One worker thread that runs a batch function over the texts of every caller waiting at once.

Concurrent requests each submit their texts; while a batch runs, new submissions queue up, and
the next batch takes all of them (up to ``max_texts``) in one call, so spaCy's ``nlp.pipe``
sees many texts together however the requests arrived. One thread also means spaCy and
Presidio are never entered concurrently (neither is documented as thread-safe).

If a batch of several submissions fails, each submission is run again on its own, so one bad
text fails only its own caller. Callers wait on a ``Future`` and may give up (``cancel``);
a cancelled submission that has not started is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")

log = logging.getLogger("llmos.gateway.pii")


@dataclass
class _Job(Generic[R]):
    texts: list[str]
    future: Future[list[R]]


class BatcherClosed(RuntimeError):
    """Submitted after ``close()``."""


class Batcher(Generic[R]):
    """Runs ``fn(texts) -> results`` (one result per text, in order) on one worker thread."""

    def __init__(
        self, fn: Callable[[list[str]], list[R]], *, max_texts: int = 64, name: str = "batcher"
    ) -> None:
        self._fn = fn
        self._max_texts = max_texts
        self._queue: queue.SimpleQueue[_Job[R] | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0  # how many calls of fn (for tests and benchmarks)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, texts: Sequence[str]) -> Future[list[R]]:
        future: Future[list[R]] = Future()
        with self._lock:
            if self._closed:
                raise BatcherClosed("closed")
            self._queue.put(_Job(list(texts), future))
        return future

    def close(self) -> None:
        """Stop taking work. Submissions queued before the close still run; any the worker
        finds after the close marker are cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)

    def _take(self, first: _Job[R]) -> tuple[list[_Job[R]], bool]:
        """``first`` and whatever else is waiting, up to ``max_texts``; and whether to stop after."""
        jobs = [first]
        count = len(first.texts)
        while count < self._max_texts:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += len(job.texts)
        return jobs, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._take(first)
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)
        while True:  # closed: cancel what is left
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.cancel()

    def _run(self, jobs: list[_Job[R]]) -> None:
        texts = [t for j in jobs for t in j.texts]
        self.batches += 1
        try:
            results = self._fn(texts)
        except BaseException as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            # Find whose text failed: each on its own (the others still get their answer).
            for job in jobs:
                try:
                    self.batches += 1
                    job.future.set_result(self._fn(job.texts))
                except BaseException as own:
                    job.future.set_exception(own)
            return
        at = 0
        for job in jobs:
            job.future.set_result(results[at : at + len(job.texts)])
            at += len(job.texts)
