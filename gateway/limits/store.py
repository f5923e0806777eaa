"""The seam between the pipeline and where limit state lives: the ``LimitStore`` protocol.

Two-phase protocol, because token usage is known only after generation:

1. ``admit(subjects, now)`` before the request. Atomically across every bucket of every
   subject: take one request from each requests-per-minute bucket, and require that each
   tokens-per-minute bucket is not in debt and each daily budget is not used up. If any check
   refuses, nothing is taken and ``RateLimited`` (429, with ``retry_after``) is raised. A store
   that cannot answer raises ``ServiceUnavailable`` (503, ``limits_unavailable``), unless it was
   built with ``on_store_error="allow_unlimited"``, in which case it logs and admits.
2. ``charge(subjects, tokens, now)`` after the request, for every admitted request, also a
   failed or cancelled one, with the prompt + completion tokens it used: deducted from the
   tokens-per-minute buckets (which may go into debt) and added to the daily counters. It never
   raises ``RateLimited``; a store error is logged, counted and dropped.

``now`` is Unix time in seconds (``time.time()``), the same clock for both calls and for every
replica: the daily budget follows the UTC calendar day of ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.limits.values import StoreFailures, Subject


class LimitStore(Protocol):
    def admit(self, subjects: Sequence[Subject], now: float) -> None:
        """Admit one request or raise ``RateLimited`` (or ``ServiceUnavailable``); all-or-nothing."""
        ...

    def charge(self, subjects: Sequence[Subject], tokens: int, now: float) -> None:
        """Record ``tokens`` used by an admitted request. Never raises ``RateLimited``."""
        ...

    @property
    def failures(self) -> StoreFailures:
        """Store errors since start."""
        ...

    def on_fail_open(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` for each request admitted without limits because the store failed
        (``allow_unlimited``; the fail-open metric)."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
