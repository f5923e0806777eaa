"""The worker's batched request loop: requests that arrive together decode together.

Continuous batching: while a batch runs, a request that arrives joins it at the next step (up to
``max_batch`` rows) and a request that finishes, fails or is cancelled leaves it at once; the
others go on. When the worker is idle, the first request waits up to ``window_s`` for others to
start with it. Every request keeps its own sampling parameters, stop strings, ``max_tokens``,
cancellation, token frames (sent as soon as they are produced) and terminal frame (``done``
with its usage, or ``error``); a request refused by the canary check or the model (e.g.
``context_length_exceeded``) is answered alone and never joins.

The model side is a ``BatchEngine`` (``sandbox.batchdecode.BatchDecoder`` for transformers);
this module imports no torch. Attributions asked for with a request (``sandbox.explaining``)
run when no request is decoding, or between steps once the oldest has waited long enough.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import WorkerRequestError
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest
from sandbox.explaining import Explainer
from sandbox.protocol import Frame, error_frame, event_to_frame

log = logging.getLogger("llmos.sandbox.worker")

DEFAULT_MAX_BATCH = 16
DEFAULT_WINDOW_MS = 5.0
MAX_WINDOW_MS = 1000.0

QueueItem = tuple[str, Frame] | None  # None: the channel closed (shutdown)


@dataclass(frozen=True)
class BatchSettings:
    """``max_batch`` 1 means one request at a time (no batching)."""

    max_batch: int = DEFAULT_MAX_BATCH
    window_s: float = DEFAULT_WINDOW_MS / 1000

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if not 0 <= self.window_s <= MAX_WINDOW_MS / 1000:
            raise ValueError(f"the batch window must be between 0 and {MAX_WINDOW_MS:g} ms")


@dataclass(frozen=True)
class StepOutcome:
    """What one row produced in a step: its events, or the exception that failed it alone."""

    key: str
    events: list[GenerateEvent]
    failed: Exception | None = None


class BatchEngine(Protocol):
    """A model decoding several requests together, one token per request per ``step``."""

    def __len__(self) -> int: ...

    def active(self) -> list[str]: ...

    def admit(self, key: str, request: GenerateRequest) -> list[GenerateEvent]:
        """Start a request; its first events. Raises WorkerRequestError if the model refuses it."""
        ...

    def step(self) -> list[StepOutcome]: ...

    def drop(self, key: str) -> None: ...

    def clear(self) -> None: ...


class Requests(Protocol):
    """The worker's inbox (``sandbox.worker.Inbox``)."""

    queue: queue.Queue[QueueItem]

    def is_cancelled(self, wire_id: str) -> bool: ...

    def forget(self, wire_id: str) -> None: ...


def take_arrivals(
    waiting: queue.Queue[QueueItem], *, room: int, block: bool, window_s: float
) -> tuple[list[tuple[str, Frame]], bool]:
    """Up to ``room`` waiting requests, and whether the shutdown marker was reached.

    With ``block`` (nothing running) wait for a first request, then up to ``window_s`` for more;
    otherwise take only what is already waiting.
    """
    taken: list[tuple[str, Frame]] = []
    deadline = None
    if block:
        first = waiting.get()
        if first is None:
            return taken, True
        taken.append(first)
        deadline = time.monotonic() + window_s
    while len(taken) < room:
        remaining = 0.0 if deadline is None else deadline - time.monotonic()
        try:
            item = waiting.get(timeout=remaining) if remaining > 0 else waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return taken, True
        taken.append(item)
    return taken, False


class BatchLoop:
    """Runs requests from ``inbox`` through ``engine``; frames go out through ``send``.

    ``prepare`` turns a generate frame into a request, or answers it (a protocol error, a canary,
    an early cancel) and returns None. ``send`` raising OSError (the channel failed) ends the loop.
    """

    def __init__(
        self,
        inbox: Requests,
        engine: BatchEngine,
        settings: BatchSettings,
        *,
        prepare: Callable[[str, Frame], GenerateRequest | None],
        send: Callable[[Frame], None],
        explainer: Explainer | None = None,
    ) -> None:
        self.inbox = inbox
        self.engine = engine
        self.settings = settings
        self.prepare = prepare
        self.send = send
        self.explainer = explainer
        self._asked: dict[str, GenerateRequest] = {}  # running requests that asked for an explanation

    def run(self) -> None:
        shutdown = False
        explainer = self.explainer
        while True:
            if not shutdown:
                explaining = explainer is not None and explainer.pending()
                arrivals, shutdown = take_arrivals(
                    self.inbox.queue,
                    room=self.settings.max_batch - len(self.engine),
                    block=not len(self.engine) and not explaining,
                    window_s=self.settings.window_s,
                )
                for wire_id, frame in arrivals:
                    self._admit(wire_id, frame)
            self._sweep_cancelled()
            if len(self.engine):
                if explainer is not None and explainer.due():
                    explainer.run_one()  # waited too long: one attribution between two steps
                self._step()
            elif shutdown:
                return
            elif explainer is not None and explainer.pending():
                explainer.run_one()  # idle: explain what was answered

    def _admit(self, wire_id: str, frame: Frame) -> None:
        request = self.prepare(wire_id, frame)
        if request is None:
            self.inbox.forget(wire_id)
            return
        if request.explain is not None:
            self._asked[wire_id] = request
        try:
            events = self.engine.admit(wire_id, request)
        except WorkerRequestError as exc:
            log.info("request %s refused: %s", wire_id, exc.code)
            self._fail(wire_id, exc.code, str(exc))
            return
        except OSError:
            raise
        except Exception as exc:  # the request boundary: a model failure becomes an error frame
            log.exception("request %s failed", wire_id)
            self._fail(wire_id, "generation_failed", f"generation failed ({type(exc).__name__})")
            return
        self._emit(wire_id, events)

    def _step(self) -> None:
        try:
            outcomes = self.engine.step()
        except OSError:
            raise
        except Exception as exc:  # a failed forward pass fails every row in it
            log.exception("batch step failed for %d requests", len(self.engine))
            keys = self.engine.active()
            self.engine.clear()
            for key in keys:
                self._fail(key, "generation_failed", f"generation failed ({type(exc).__name__})")
            return
        for outcome in outcomes:
            if outcome.failed is not None:
                log.error("request %s failed: %s", outcome.key, type(outcome.failed).__name__)
                self._fail(
                    outcome.key, "generation_failed", f"generation failed ({type(outcome.failed).__name__})"
                )
            else:
                self._emit(outcome.key, outcome.events)

    def _sweep_cancelled(self) -> None:
        for key in self.engine.active():
            if self.inbox.is_cancelled(key):
                self.engine.drop(key)
                log.info("request %s cancelled", key)
                self._fail(key, "cancelled", "request cancelled")

    def _emit(self, wire_id: str, events: Sequence[GenerateEvent]) -> None:
        for event in events:
            self.send(event_to_frame(wire_id, event))
            if isinstance(event, DoneEvent):
                log.info(
                    "request %s done: %s, %d prompt + %d completion tokens",
                    wire_id,
                    event.finish_reason,
                    event.prompt_tokens,
                    event.completion_tokens,
                )
                self.inbox.forget(wire_id)
                asked = self._asked.pop(wire_id, None)
                if asked is not None and self.explainer is not None:
                    self.explainer.offer(wire_id, asked, event)

    def _fail(self, wire_id: str, code: str, message: str) -> None:
        self._asked.pop(wire_id, None)
        self.inbox.forget(wire_id)
        self.send(error_frame(wire_id, code, message))
