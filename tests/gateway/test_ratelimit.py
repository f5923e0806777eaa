from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ratelimit import RateLimiter, TokenBucket


def test_bucket_starts_full() -> None:
    bucket = TokenBucket.per_minute(60, now=100.0)

    assert (bucket.capacity, bucket.refill_per_s, bucket.tokens, bucket.updated) == (60.0, 1.0, 60.0, 100.0)


@pytest.mark.parametrize("rpm", [1, 2, 7, 60, 600])
def test_burst_up_to_rpm_then_refused(rpm: int) -> None:
    limiter = RateLimiter()

    results = [limiter.check("p", rpm, now=0.0) for _ in range(rpm)]

    assert results == [None] * rpm
    assert limiter.check("p", rpm, now=0.0) is not None


# (rpm, seconds until one request is allowed again = 60 / rpm, Retry-After rounded up, at least 1)
RETRY_AFTER = [(1, 60), (2, 30), (7, 9), (60, 1), (120, 1), (600, 1), (45, 2)]


@pytest.mark.parametrize(("rpm", "retry_after"), RETRY_AFTER)
def test_retry_after_rounds_up_to_whole_seconds(rpm: int, retry_after: int) -> None:
    limiter = RateLimiter()
    for _ in range(rpm):
        limiter.check("p", rpm, now=0.0)

    assert limiter.check("p", rpm, now=0.0) == retry_after


def test_retry_after_shrinks_as_time_passes() -> None:
    limiter = RateLimiter()
    limiter.check("p", 1, now=0.0)

    assert limiter.check("p", 1, now=30.0) == 30
    assert limiter.check("p", 1, now=59.5) == 1
    assert limiter.check("p", 1, now=60.0) is None


def test_refill_rate_is_rpm_per_minute() -> None:
    limiter = RateLimiter()
    for _ in range(60):
        limiter.check("p", 60, now=0.0)

    # one token per second comes back
    assert limiter.check("p", 60, now=0.5) is not None
    assert limiter.check("p", 60, now=1.0) is None
    assert limiter.check("p", 60, now=1.0) is not None
    assert [limiter.check("p", 60, now=11.0) for _ in range(10)] == [None] * 10
    assert limiter.check("p", 60, now=11.0) is not None


def test_refill_never_exceeds_the_burst() -> None:
    limiter = RateLimiter()
    limiter.check("p", 3, now=0.0)

    results = [limiter.check("p", 3, now=10_000.0) for _ in range(4)]

    assert results[:3] == [None, None, None]
    assert results[3] is not None


def test_refused_requests_do_not_consume_tokens() -> None:
    bucket = TokenBucket.per_minute(60, now=0.0)
    bucket.tokens = 0.0

    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) is None


def test_clock_going_backwards_does_not_add_tokens() -> None:
    bucket = TokenBucket.per_minute(60, now=100.0)
    bucket.tokens = 0.0

    assert bucket.take(50.0) == pytest.approx(1.0)
    assert bucket.tokens == 0.0


def test_no_rpm_is_unlimited() -> None:
    limiter = RateLimiter()

    assert all(limiter.check("p", None, now=0.0) is None for _ in range(10_000))


def test_principals_have_separate_buckets() -> None:
    limiter = RateLimiter()
    limiter.check("a", 1, now=0.0)

    assert limiter.check("a", 1, now=0.0) == 60
    assert limiter.check("b", 1, now=0.0) is None


def test_a_changed_limit_takes_effect() -> None:
    limiter = RateLimiter()
    limiter.check("p", 1, now=0.0)

    assert limiter.check("p", 1, now=0.0) is not None
    assert limiter.check("p", 5, now=0.0) is None


@settings(max_examples=200, deadline=None, database=None)
@given(
    rpm=st.integers(min_value=1, max_value=10_000),
    gaps=st.lists(st.floats(min_value=0, max_value=120, allow_nan=False), max_size=50),
)
def test_never_more_than_burst_plus_refill(rpm: int, gaps: list[float]) -> None:
    limiter = RateLimiter()
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        retry = limiter.check("p", rpm, now)
        if retry is None:
            allowed += 1
        else:
            assert 1 <= retry <= 60
    assert allowed <= rpm + now * rpm / 60.0 + 1e-6
