"""What a store does when its backend fails: fail closed unless configured otherwise.

    admit fails, on_store_error: deny             ->  ServiceUnavailable 503 limits_unavailable
    admit fails, on_store_error: allow_unlimited  ->  warning logged, request admitted unlimited
    charge fails (either setting)                 ->  error logged, usage dropped, counted

Log records name the store (without credentials) and the error class, and are throttled: at
most one per kind of failure per ``log_interval_s``, with a count of those left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gateway.limits.messages import limits_unavailable
from gateway.limits.values import OnStoreError, StoreFailures

log = logging.getLogger("llmos.gateway")


class ThrottledLog:
    """Emit at most one record per ``interval_s``; the next one says how many were left out."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, message: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if now - self._last < self._interval_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        log.log(level, message, *args)


def describe(exc: BaseException) -> str:
    """The error class, and a Redis error code (an upper-case first word) when there is one."""
    words = str(exc).split(maxsplit=1)
    code = words[0] if words and words[0].isupper() and words[0].isalpha() else ""
    return f"{type(exc).__name__} {code}".strip()


class StoreErrorHandler:
    """Applies ``on_store_error`` to backend failures and counts them (thread-safe)."""

    def __init__(
        self,
        on_store_error: OnStoreError,
        store_name: str,
        *,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_store_error not in ("deny", "allow_unlimited"):
            raise ValueError(f"on_store_error must be 'deny' or 'allow_unlimited', got {on_store_error!r}")
        self.on_store_error = on_store_error
        self._name = store_name
        self._lock = threading.Lock()
        self._counts = StoreFailures()
        self._admit_log = ThrottledLog(log_interval_s, clock)
        self.on_fail_open: Callable[[], None] | None = None  # metrics: one call per admitted request
        self._charge_log = ThrottledLog(log_interval_s, clock)

    @property
    def failures(self) -> StoreFailures:
        with self._lock:
            return self._counts

    def admit_failed(self, exc: BaseException) -> None:
        """Raise ``ServiceUnavailable`` from ``exc`` (deny), or log and return (allow_unlimited)."""
        allow = self.on_store_error == "allow_unlimited"
        with self._lock:
            c = self._counts
            self._counts = StoreFailures(
                admit_errors=c.admit_errors + 1,
                admitted_unlimited=c.admitted_unlimited + int(allow),
                charge_errors=c.charge_errors,
            )
        if allow:
            if self.on_fail_open is not None:
                self.on_fail_open()
            self._admit_log(
                logging.WARNING,
                "rate-limit store %s failed (%s); admitting without limits (on_store_error: allow_unlimited)",
                self._name,
                describe(exc),
            )
            return
        self._admit_log(
            logging.ERROR,
            "rate-limit store %s failed (%s); refusing requests with 503 (on_store_error: deny)",
            self._name,
            describe(exc),
        )
        raise limits_unavailable() from exc

    def charge_failed(self, exc: BaseException) -> None:
        """Log and count a lost charge; never raises."""
        with self._lock:
            c = self._counts
            self._counts = StoreFailures(c.admit_errors, c.admitted_unlimited, c.charge_errors + 1)
        self._charge_log(
            logging.ERROR,
            "rate-limit store %s failed (%s); token usage of a finished request was not recorded",
            self._name,
            describe(exc),
        )
