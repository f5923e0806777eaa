from __future__ import annotations

import logging

import pytest
import redis

from gateway.errors import ServiceUnavailable
from gateway.limits.failure import StoreErrorHandler, ThrottledLog, describe
from gateway.limits.values import StoreFailures


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttled = ThrottledLog(60.0, clock)

    for _ in range(5):
        throttled(logging.WARNING, "store %s failed", "redis")
    clock.now = 59.9
    throttled(logging.WARNING, "store %s failed", "redis")
    clock.now = 60.0
    throttled(logging.WARNING, "store %s failed", "redis")

    assert [r.getMessage() for r in caplog.records] == [
        "store redis failed",
        "store redis failed (5 similar message(s) suppressed)",
    ]


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
            "ConnectionError",
        ),
        (
            redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
            "ResponseError WRONGTYPE",
        ),
        (redis.AuthenticationError("invalid username-password pair"), "AuthenticationError"),
        (redis.TimeoutError("Timeout reading from socket"), "TimeoutError"),
    ],
)
def test_describe_names_the_class_and_redis_code_only(exc: Exception, text: str) -> None:
    assert describe(exc) == text


def test_deny_raises_503_from_the_cause_and_counts() -> None:
    handler = StoreErrorHandler("deny", "redis://cache:6379/0", clock=FakeClock())
    cause = redis.ConnectionError("down")

    with pytest.raises(ServiceUnavailable) as info:
        handler.admit_failed(cause)

    assert info.value.__cause__ is cause
    assert handler.failures == StoreFailures(admit_errors=1)


def test_allow_unlimited_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    handler = StoreErrorHandler("allow_unlimited", "redis://cache:6379/0", clock=FakeClock())
    opened: list[None] = []
    handler.on_fail_open = lambda: opened.append(None)  # the metrics' fail-open counter

    handler.admit_failed(redis.ConnectionError("down"))
    handler.admit_failed(redis.ConnectionError("down"))
    handler.charge_failed(redis.ConnectionError("down"))

    assert handler.failures == StoreFailures(admit_errors=2, admitted_unlimited=2, charge_errors=1)
    assert len(opened) == 2  # one per request let through, exactly
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "rate-limit store redis://cache:6379/0 failed (ConnectionError); "
            "admitting without limits (on_store_error: allow_unlimited)",
        ),
        (
            "ERROR",
            "rate-limit store redis://cache:6379/0 failed (ConnectionError); "
            "token usage of a finished request was not recorded",
        ),
    ]


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="on_store_error"):
        StoreErrorHandler("allow", "redis")  # type: ignore[arg-type]
