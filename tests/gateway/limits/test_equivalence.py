"""Differential test: random operation sequences give the same answers on both stores."""

from __future__ import annotations

import math

import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.errors import RateLimited
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.store import LimitStore
from gateway.limits.values import Limits, Subject
from tests.gateway.limits.conftest import RedisStoreFactory

T0 = 1_796_110_000.0  # 2026-12-01T07:26:40Z: sequences may cross midnight UTC

limit_values = st.one_of(st.none(), st.sampled_from([1, 1, 2, 3, 10, 60, 1000]))
limits = st.builds(Limits, rpm=limit_values, tpm=limit_values, daily_tokens=limit_values)
subject = st.builds(
    Subject,
    scope=st.sampled_from(["principal", "tenant"]),
    id=st.sampled_from(["key:aaaaaaaaaaaaaaaa", "acme"]),
    limits=limits,
)
operation = st.tuples(
    st.sampled_from(["admit", "admit", "admit", "charge"]),
    st.lists(subject, max_size=3),
    st.integers(min_value=0, max_value=2000),  # tokens, for a charge
    st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.5, 1.0, 7.3, 30.0, 61.0, 3600.0, 40_000.0]),  # time step
)


def run(store: LimitStore, operations: list[tuple[str, list[Subject], int, float]]) -> list[object]:
    answers: list[object] = []
    now = T0
    for op, subjects, tokens, step in operations:
        now += step
        if op == "charge":
            store.charge(subjects, tokens, now)
            continue
        try:
            store.admit(subjects, now)
            answers.append(None)
        except RateLimited as exc:
            answers.append((exc.code, exc.retry_after, exc.message))
    return answers


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, max_size=40))
# Found by CI: the memory store swept on its first admit although its interval was infinite,
# forgetting a debt that Redis (real-time expiry) still held.
@example(
    operations=[
        ("charge", [Subject("tenant", "acme", Limits(rpm=None, tpm=2, daily_tokens=None))], 62, 0.0),
        ("admit", [Subject("principal", "key:aaaaaaaaaaaaaaaa", Limits(None, None, 1))], 0, 3600.0),
        ("admit", [Subject("tenant", "acme", Limits(rpm=None, tpm=1, daily_tokens=None))], 0, 0.0),
    ]
)
def test_memory_and_redis_agree(
    operations: list[tuple[str, list[Subject], int, float]],
    make_redis_store: RedisStoreFactory,
    redis_client: redis.Redis,
) -> None:
    redis_client.flushall()
    store = make_redis_store()

    # Both stores forget a bucket once it has refilled: memory when it sweeps, Redis when the key
    # expires. Redis expiry follows the real clock, which this test does not move, so the memory
    # store must not sweep either; otherwise a limit lowered after a long pause would meet a
    # forgotten bucket on one side and a remembered debt on the other.
    assert run(store, operations) == run(MemoryLimitStore(sweep_interval_s=math.inf), operations)
