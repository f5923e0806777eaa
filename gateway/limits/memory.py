"""Limit state in this process: one lock, plain dicts, the pure math of ``bucket``.

For a single gateway process. Several replicas each enforce their own copy of every limit
(use the Redis store to share them). State is lost on restart, which forgives all usage.
Buckets that are full again and counters of past days are swept out about once a minute.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from gateway.limits import bucket
from gateway.limits.checks import charge_amount, checks_for, choose
from gateway.limits.messages import rate_limited
from gateway.limits.values import Check, Kind, Refusal, Scope, StoreFailures, Subject

SWEEP_INTERVAL_S = 60.0

_BucketKey = tuple[Scope, str, Kind]
_DailyKey = tuple[Scope, str]


def _bucket_key(check: Check) -> _BucketKey:
    return (check.subject.scope, check.subject.id, check.kind)


class MemoryLimitStore:
    """Thread-safe in-process store: every admit and charge runs under one lock."""

    def __init__(self, *, sweep_interval_s: float = SWEEP_INTERVAL_S) -> None:
        """``sweep_interval_s=math.inf`` never sweeps (every bucket is kept until ``close``)."""
        self._sweep_interval_s = sweep_interval_s
        self._lock = threading.Lock()
        self._buckets: dict[_BucketKey, bucket.Bucket] = {}
        self._daily: dict[_DailyKey, tuple[str, int]] = {}  # (day, tokens used that day)
        self._swept = float("-inf")

    def admit(self, subjects: Sequence[Subject], now: float) -> None:
        checks = checks_for(subjects)
        if not checks:
            return
        day = bucket.utc_day(now)
        with self._lock:
            refusals: list[Refusal] = []
            taken: dict[_BucketKey, bucket.Bucket] = {}
            for check in checks:
                if check.kind == "daily_tokens":
                    wait = bucket.daily_wait(self._used(check.subject, day), check.limit, now)
                else:
                    key = _bucket_key(check)
                    state = bucket.current(self._buckets.get(key), check.limit, now)
                    if check.kind == "rpm":
                        wait = bucket.request_wait(state)
                        taken[key] = bucket.take(state, 1.0)
                    else:
                        wait = bucket.debt_wait(state)
                if wait is not None:
                    refusals.append(Refusal(check, bucket.retry_after(check.kind, wait)))
            if refusals:
                raise rate_limited(choose(refusals))
            self._buckets.update(taken)
            self._maybe_sweep(now)

    def charge(self, subjects: Sequence[Subject], tokens: int, now: float) -> None:
        amount = charge_amount(tokens)
        checks = checks_for(subjects, ("tpm", "daily_tokens"))
        if not checks or amount == 0:
            return
        day = bucket.utc_day(now)
        with self._lock:
            for check in checks:
                if check.kind == "daily_tokens":
                    daily_key = (check.subject.scope, check.subject.id)
                    self._daily[daily_key] = (day, self._used(check.subject, day) + amount)
                else:
                    key = _bucket_key(check)
                    state = bucket.current(self._buckets.get(key), check.limit, now)
                    self._buckets[key] = bucket.take(state, float(amount))

    @property
    def failures(self) -> StoreFailures:
        return StoreFailures()

    def on_fail_open(self, hook: Callable[[], None]) -> None:
        """Never called: this store cannot fail."""

    def close(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._daily.clear()

    def __len__(self) -> int:
        """Buckets and daily counters held (for tests and metrics)."""
        with self._lock:
            return len(self._buckets) + len(self._daily)

    def _used(self, subject: Subject, day: str) -> int:
        entry = self._daily.get((subject.scope, subject.id))
        return entry[1] if entry is not None and entry[0] == day else 0

    def _maybe_sweep(self, now: float) -> None:
        """Forget buckets that are full again and counters of other days (caller holds the lock)."""
        if math.isinf(self._sweep_interval_s) or now - self._swept < self._sweep_interval_s:
            return
        self._swept = now
        day = bucket.utc_day(now)
        self._buckets = {
            key: state
            for key, state in self._buckets.items()
            if not bucket.is_full(bucket.current(state, state.capacity, now))
        }
        self._daily = {key: entry for key, entry in self._daily.items() if entry[0] == day}
