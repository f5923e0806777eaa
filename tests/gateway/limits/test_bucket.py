"""The pure bucket and calendar math, with tables and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.limits import bucket
from gateway.limits.bucket import Bucket

PROPS = settings(max_examples=300, deadline=None, database=None)
capacities = st.integers(min_value=1, max_value=100_000)
gaps = st.floats(min_value=0, max_value=120, allow_nan=False, allow_infinity=False)
T0 = 1_796_040_000.0  # 2026-11-30T12:00:00Z


def test_a_missing_bucket_is_full() -> None:
    assert bucket.current(None, 60, T0) == Bucket(level=60.0, capacity=60, updated=T0)


def test_refill_is_capacity_per_minute_and_capped() -> None:
    empty = Bucket(level=0.0, capacity=60, updated=T0)

    assert bucket.current(empty, 60, T0 + 1.5).level == 1.5
    assert bucket.current(empty, 60, T0 + 600).level == 60.0


def test_debt_refills_too() -> None:
    debt = Bucket(level=-500.0, capacity=1000, updated=T0)

    assert bucket.current(debt, 1000, T0 + 30).level == pytest.approx(0.0)


def test_clock_going_backwards_adds_nothing_and_keeps_the_later_time() -> None:
    state = Bucket(level=0.0, capacity=60, updated=T0)

    assert bucket.current(state, 60, T0 - 50) == state


# (level, old, new, adapted): usage kept, never new debt
ADAPT = [
    (0.0, 1, 5, 4.0),  # raised: the 4 extra requests at once
    (50.0, 60, 20, 10.0),  # lowered: 10 used of the new 20
    (5.0, 60, 10, 0.0),  # lowered below use: emptied, not in debt
    (-200.0, 1000, 500, -200.0),  # debt kept
    (-200.0, 1000, 5000, 3800.0),  # raised: 1200 used of 5000
    (60.0, 60, 10, 10.0),  # full stays full
]


@pytest.mark.parametrize(("level", "old", "new", "adapted"), ADAPT)
def test_adapt(level: float, old: int, new: int, adapted: float) -> None:
    assert bucket.adapt(level, old, new) == adapted


def test_a_changed_limit_is_applied_as_of_the_last_update() -> None:
    state = Bucket(level=5.0, capacity=60, updated=T0)  # 55 used

    assert bucket.current(state, 10, T0).level == 0.0
    assert bucket.current(state, 10, T0 + 6).level == pytest.approx(1.0)  # refills at 10/min


@pytest.mark.parametrize(
    ("level", "capacity", "wait"),
    [(1.0, 60, None), (60.0, 60, None), (0.0, 60, 1.0), (0.5, 60, 0.5), (0.0, 1, 60.0), (-2.0, 6, 30.0)],
)
def test_request_wait(level: float, capacity: int, wait: float | None) -> None:
    assert bucket.request_wait(Bucket(level, capacity, T0)) == wait


@pytest.mark.parametrize(
    ("level", "capacity", "wait"), [(0.001, 60, None), (0.0, 60, 0.0), (-500.0, 1000, 30.0), (-1.0, 60, 1.0)]
)
def test_debt_wait(level: float, capacity: int, wait: float | None) -> None:
    assert bucket.debt_wait(Bucket(level, capacity, T0)) == wait


@pytest.mark.parametrize(
    ("kind", "wait", "seconds"),
    [
        ("rpm", 0.0, 1),
        ("rpm", 0.2, 1),
        ("rpm", 1.0, 1),
        ("rpm", 8.57, 9),
        ("rpm", 60.0, 60),
        ("tpm", 0.0, 1),  # level exactly 0 needs a moment more
        ("tpm", 30.0, 31),
        ("tpm", 29.5, 30),
        ("daily_tokens", 3600.0, 3600),
        ("daily_tokens", 0.5, 1),
    ],
)
def test_retry_after_is_whole_seconds_at_least_one(kind: bucket.Kind, wait: float, seconds: int) -> None:
    assert bucket.retry_after(kind, wait) == seconds


@pytest.mark.parametrize(
    ("when", "day", "to_midnight"),
    [
        (datetime(2026, 11, 30, 23, 0, tzinfo=UTC), "2026-11-30", 3600.0),
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), "2026-12-01", 86400.0),
        (datetime(2026, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), "2026-12-31", 0.5),
        (datetime(2028, 2, 29, 12, 0, tzinfo=UTC), "2028-02-29", 43200.0),
    ],
)
def test_utc_day_and_midnight(when: datetime, day: str, to_midnight: float) -> None:
    assert bucket.utc_day(when.timestamp()) == day
    assert bucket.seconds_to_midnight(when.timestamp()) == to_midnight


def test_daily_wait() -> None:
    late = datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp()

    assert bucket.daily_wait(99, 100, late) is None
    assert bucket.daily_wait(100, 100, late) == 3600.0
    assert bucket.daily_wait(10**9, 100, late) == 3600.0


# -- properties ------------------------------------------------------------------------------------


@PROPS
@given(capacity=capacities, steps=st.lists(st.tuples(gaps, st.integers(1, 5)), max_size=60))
def test_never_admits_more_than_capacity_plus_refill(capacity: int, steps: list[tuple[float, int]]) -> None:
    state: Bucket | None = None
    now, admitted = T0, 0
    for gap, attempts in steps:
        now += gap
        for _ in range(attempts):
            current = bucket.current(state, capacity, now)
            if bucket.request_wait(current) is None:
                state = bucket.take(current, 1.0)
                admitted += 1
    assert admitted <= capacity + (now - T0) * capacity / 60.0 + 1e-6


@PROPS
@given(capacity=capacities, level=st.floats(-1e6, 1.0, allow_nan=False), gap=gaps)
def test_retrying_after_retry_after_succeeds(capacity: int, level: float, gap: float) -> None:
    state = Bucket(min(level, float(capacity)), capacity, T0)
    for kind, wait_of in (("rpm", bucket.request_wait), ("tpm", bucket.debt_wait)):
        wait = wait_of(state)
        if wait is None:
            continue
        seconds = bucket.retry_after(kind, wait)  # type: ignore[arg-type]
        assert wait_of(bucket.current(state, capacity, T0 + seconds)) is None
        if seconds > 1:  # and not a whole second earlier (just before it: a wait that is a whole
            # number of seconds up to float rounding, e.g. (1 - 0.95) * 60 = 3.0000000000000027,
            # rounds up to 4 although the level reaches exactly 1.0 at 3)
            assert wait_of(bucket.current(state, capacity, T0 + seconds - 1 - 1e-6)) is not None


@PROPS
@given(
    capacity=capacities,
    events=st.lists(st.tuples(gaps, st.integers(min_value=0, max_value=50_000)), max_size=60),
)
def test_tokens_admitted_overshoot_by_at_most_one_request(
    capacity: int, events: list[tuple[float, int]]
) -> None:
    """Each admitted request is charged afterwards; the bucket lets at most the last one overshoot."""
    state: Bucket | None = None
    now, charged, largest = T0, 0, 0
    for gap, tokens in events:
        now += gap
        current = bucket.current(state, capacity, now)
        if bucket.debt_wait(current) is None:
            state = bucket.take(current, float(tokens))
            charged += tokens
            largest = max(largest, tokens)
    assert charged <= capacity + (now - T0) * capacity / 60.0 + largest + 1e-6


@PROPS
@given(
    capacity=capacities,
    level=st.floats(-1e6, 1e5, allow_nan=False),
    old=capacities,
    first=gaps,
    second=gaps,
)
def test_current_does_not_depend_on_when_it_was_written_back(
    capacity: int, level: float, old: int, first: float, second: float
) -> None:
    state = Bucket(min(level, float(old)), old, T0)

    direct = bucket.current(state, capacity, T0 + first + second)
    via = bucket.current(bucket.current(state, capacity, T0 + first), capacity, T0 + first + second)

    assert via.level == pytest.approx(direct.level, rel=1e-9, abs=1e-6)
    assert direct.level <= capacity


@PROPS
@given(level=st.floats(-1e6, 1e5, allow_nan=False), old=capacities, new=capacities)
def test_adapt_keeps_usage_and_never_adds_debt(level: float, old: int, new: int) -> None:
    level = min(level, float(old))
    adapted = bucket.adapt(level, old, new)

    assert min(level, 0.0) <= adapted <= new
    if new >= old:
        # new - (old - level) rounds at the scale of the capacities, not of the level.
        assert adapted == pytest.approx(level + (new - old), abs=1e-12 * max(old, new))


@PROPS
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_day_and_midnight_agree_with_datetime(naive: datetime) -> None:
    when = naive.replace(tzinfo=UTC)
    now = when.timestamp()
    to_midnight = bucket.seconds_to_midnight(now)

    assert bucket.utc_day(now) == when.date().isoformat()
    assert 0 < to_midnight <= 86400
    assert bucket.utc_day(now + to_midnight) == (when.date() + timedelta(days=1)).isoformat()
