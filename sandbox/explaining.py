"""Explanations in the worker: attribute each answer to its prompt after it was sent.

A generate frame may carry ``explain`` (``explain.types.AttributionSettings`` as JSON). When
that request ends with ``done``, the worker owes the gateway one ``explanation`` frame:

- ``status: ok`` with the attribution (``explain.attribution.attribute`` over the prompt and
  output token ids the model saw and produced, computed by this worker on its own copy of the
  weights: never a second one);
- ``not_applicable`` (``echo_model``: nothing to attribute; ``not_generated``: no output token);
- ``skipped`` / ``overload``: more than ``queue_size`` attributions were waiting;
- ``failed`` (``invalid_result`` for unusable settings or scores, ``worker_error`` otherwise).

Attributions wait in a bounded queue and run on the model's thread, *after* the answers they
explain: when no request is decoding, or between two decoding steps once the oldest has waited
``interleave_after_s`` or the queue is half full (so a busy worker still explains, at a cost
the benchmark measures, instead of starving the queue or overflowing it). This module imports
the ``explain`` package (so its directory is readable after isolation) but not torch;
``explain.attribution`` (captum) loads with the model.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explain.errors import ExplanationError
from explain.types import AttributionSettings
from gateway.types import DoneEvent, GenerateRequest
from sandbox.protocol import Frame

log = logging.getLogger("llmos.sandbox.worker")

DEFAULT_QUEUE_SIZE = 64
DEFAULT_INTERLEAVE_AFTER_S = 1.0
DEFAULT_MAX_BATCH = 16  # answers attributed in one pass (gradient x activation summaries)


@dataclass(frozen=True)
class _Job:
    wire_id: str
    settings: AttributionSettings
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    queued_at: float


def explanation_frame(wire_id: str, status: str, reason: str | None = None, **extra: Any) -> Frame:
    frame: Frame = {"type": "explanation", "id": wire_id, "status": status, **extra}
    if reason is not None:
        frame["reason"] = reason
    return frame


class Explainer:
    """The worker's attribution queue. ``model``: the loaded ``sandbox.model.LoadedModel`` (or
    None for a model that cannot be attributed, such as the echo model)."""

    def __init__(
        self,
        model: Any,
        send: Callable[[Frame], None],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        interleave_after_s: float = DEFAULT_INTERLEAVE_AFTER_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.send = send
        self.queue_size = queue_size
        self.interleave_after_s = interleave_after_s
        self.max_batch = max_batch
        self.clock = clock
        self._jobs: collections.deque[_Job] = collections.deque()

    def pending(self) -> bool:
        return bool(self._jobs)

    def due(self) -> bool:
        """Run one attribution between two decode steps: the oldest has waited long enough, or
        the queue is half full (a worker that never idles still keeps up, rather than overflow)."""
        if not self._jobs:
            return False
        old = self.clock() - self._jobs[0].queued_at >= self.interleave_after_s
        return old or len(self._jobs) >= max(1, self.queue_size // 2)

    def offer(self, wire_id: str, request: GenerateRequest, done: DoneEvent) -> None:
        """``request`` ended with ``done``: queue its attribution, or answer now why there is none."""
        if request.explain is None:
            return
        try:
            settings = AttributionSettings.from_json(dict(request.explain))
        except ExplanationError as exc:
            log.warning("request %s: unusable explain settings: %s", wire_id, exc)
            self.send(explanation_frame(wire_id, "failed", "invalid_result"))
            return
        if self.model is None:
            self.send(explanation_frame(wire_id, "not_applicable", "echo_model"))
        elif not done.prompt_ids or not done.output_ids:
            self.send(explanation_frame(wire_id, "not_applicable", "not_generated"))
        elif len(self._jobs) >= self.queue_size:
            self.send(explanation_frame(wire_id, "skipped", "overload"))
        else:
            self._jobs.append(_Job(wire_id, settings, done.prompt_ids, done.output_ids, self.clock()))

    def run_one(self) -> None:
        """Attribute the oldest waiting answer, with those behind it that batch with it (gradient
        x activation summaries: one pass for all), and send their frames (OSError: the channel
        failed)."""
        if not self._jobs:
            return
        from explain.attribution import batch_limit, batchable  # torch and captum: loaded already

        if batchable(self._jobs[0].settings):
            outputs = max(len(j.output_ids) for j in self._jobs)
            limit = batch_limit(self.model.model, outputs, self.max_batch)
            batch: list[_Job] = []
            while self._jobs and len(batch) < limit and batchable(self._jobs[0].settings):
                batch.append(self._jobs.popleft())
            if len(batch) > 1 and self._run_batch(batch):
                return
            for job in batch:  # one alone, or a batch that failed: each on its own
                self._run(job)
            return
        self._run(self._jobs.popleft())

    def _run_batch(self, batch: list[_Job]) -> bool:
        from explain.attribution import attribute_many

        try:
            results = attribute_many(
                self.model.model,
                [(j.prompt_ids, j.output_ids, j.settings) for j in batch],
                tokenizer=self.model.tokenizer,
            )
        except Exception:  # each answer is tried on its own instead
            log.exception("a batch of %d attributions failed; trying each alone", len(batch))
            return False
        for job, result in zip(batch, results, strict=True):
            self.send(explanation_frame(job.wire_id, "ok", attribution=result.to_json()))
        log.info("%d answers explained together in %d ms each", len(batch), results[0].elapsed_ms)
        return True

    def _run(self, job: _Job) -> None:
        from explain.attribution import attribute

        try:
            result = attribute(
                self.model.model, job.prompt_ids, job.output_ids, job.settings, tokenizer=self.model.tokenizer
            )
        except ExplanationError as exc:
            log.warning("request %s: no attribution: %s", job.wire_id, exc)
            frame = explanation_frame(job.wire_id, "failed", "invalid_result")
        except Exception:  # the attribution boundary: the worker goes on serving
            log.exception("request %s: attribution failed", job.wire_id)
            frame = explanation_frame(job.wire_id, "failed", "worker_error")
        else:
            log.info(
                "request %s explained: %s/%s in %d ms",
                job.wire_id,
                result.method,
                result.scope,
                result.elapsed_ms,
            )
            frame = explanation_frame(job.wire_id, "ok", attribution=result.to_json())
        self.send(frame)
