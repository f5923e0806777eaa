"""What only the Redis store has: shared state across replicas, keys and TTLs, failures."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
import redis

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.limits.redis_store import RedisLimitStore, parse_refusals, safe_address
from gateway.limits.values import Check, Limits, Subject
from tests.gateway.limits.conftest import RedisStoreFactory
from tests.gateway.limits.redis_server import INSTALL_HINT, RedisServer, free_port, redis_binary

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
KEY = "key:0123456789abcdef"
PASSWORD = "s3cret-redis-password"


def principal(**limits: int) -> Subject:
    return Subject("principal", KEY, Limits(**limits))


def tenant(**limits: int) -> Subject:
    return Subject("tenant", "acme", Limits(**limits))


def admits(store: RedisLimitStore, subjects: list[Subject], now: float = T0) -> bool:
    try:
        store.admit(subjects, now)
    except RateLimited:
        return False
    return True


@pytest.fixture
def down_url() -> str:
    """A Redis URL (with a password) where nothing listens."""
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


# -- shared by replicas ----------------------------------------------------------------------------


def test_two_replicas_enforce_one_shared_limit(make_redis_store: RedisStoreFactory) -> None:
    one, two = make_redis_store(), make_redis_store()
    subjects = [principal(rpm=10)]

    results = [admits(one if i % 2 else two, subjects) for i in range(12)]

    assert results == [True] * 10 + [False] * 2
    with pytest.raises(RateLimited) as info:
        two.admit(subjects, T0)
    assert info.value.retry_after == 6


def test_two_replicas_share_token_usage(make_redis_store: RedisStoreFactory) -> None:
    one, two = make_redis_store(), make_redis_store()
    subjects = [tenant(tpm=100, daily_tokens=1000)]

    one.charge(subjects, 150, T0)

    assert not admits(two, subjects)
    two.charge(subjects, 850, T0 + 3600)
    with pytest.raises(RateLimited) as info:
        one.admit(subjects, T0 + 3600)
    assert info.value.code == "daily_budget_exceeded"


def test_replicas_on_many_threads_admit_exactly_the_limit(make_redis_store: RedisStoreFactory) -> None:
    replicas = [make_redis_store() for _ in range(3)]
    subjects = [principal(rpm=40), tenant(rpm=1000)]
    barrier = threading.Barrier(12)
    counts: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        store = replicas[n % len(replicas)]
        barrier.wait()
        mine = sum(admits(store, subjects) for _ in range(10))
        with lock:
            counts.append(mine)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert sum(counts) == 40


def test_key_prefixes_keep_deployments_apart(make_redis_store: RedisStoreFactory) -> None:
    blue, green = make_redis_store(key_prefix="blue:"), make_redis_store(key_prefix="green:")
    blue.admit([principal(rpm=1)], T0)

    assert not admits(blue, [principal(rpm=1)])
    assert admits(green, [principal(rpm=1)])


# -- keys and expiry -------------------------------------------------------------------------------


def test_keys_are_namespaced_and_expire(
    make_redis_store: RedisStoreFactory, redis_client: redis.Redis
) -> None:
    store = make_redis_store(key_prefix="llmos:limits:")
    subjects = [principal(rpm=60, tpm=600), tenant(daily_tokens=1000)]
    store.admit(subjects, T0)
    store.charge(subjects, 300, T0)

    keys = sorted(k.decode() for k in cast(list[bytes], redis_client.keys("*")))
    assert keys == [
        f"llmos:limits:principal:{KEY}:rpm",
        f"llmos:limits:principal:{KEY}:tpm",
        "llmos:limits:tenant:acme:daily:2026-11-30",
    ]
    # rpm: 1 used, full again in 1 s, kept 60 s more; tpm: 300 used at 10/s, full in 30 s
    assert 60_000 < redis_client.pttl(f"llmos:limits:principal:{KEY}:rpm") <= 61_000
    assert 89_000 < redis_client.pttl(f"llmos:limits:principal:{KEY}:tpm") <= 90_000
    assert 172_790 < redis_client.ttl("llmos:limits:tenant:acme:daily:2026-11-30") <= 172_800
    assert redis_client.get("llmos:limits:tenant:acme:daily:2026-11-30") == b"300"
    assert redis_client.hgetall(f"llmos:limits:principal:{KEY}:tpm") == {
        b"level": b"300",
        b"cap": b"600",
        b"ts": b"1796040000",
    }


def test_an_expired_bucket_is_a_full_one(
    make_redis_store: RedisStoreFactory, redis_client: redis.Redis
) -> None:
    store = make_redis_store()
    store.admit([principal(rpm=1)], T0)
    assert not admits(store, [principal(rpm=1)])

    redis_client.delete(f"test:limits:principal:{KEY}:rpm")

    assert admits(store, [principal(rpm=1)])


def test_an_admit_without_limits_sends_nothing(make_redis_store: RedisStoreFactory, down_url: str) -> None:
    store = make_redis_store(url=down_url)

    store.admit([principal(), tenant()], T0)
    store.charge([principal(rpm=5)], 100, T0)  # no tokens limit: nothing to charge

    assert store.failures.admit_errors == store.failures.charge_errors == 0


# -- failures --------------------------------------------------------------------------------------


def test_redis_down_denies_with_503(
    make_redis_store: RedisStoreFactory, down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store(url=down_url, timeout_s=0.25)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as info:
        store.admit([principal(rpm=5)], T0)

    assert time.monotonic() - started < 1.0  # no retries, no backoff
    error = info.value
    assert (error.status, error.code, error.retry_after) == (503, "limits_unavailable", 1)
    assert isinstance(error.__cause__, redis.ConnectionError)
    assert PASSWORD not in error.message
    assert store.failures.admit_errors == 1
    assert store.failures.admitted_unlimited == 0
    assert "on_store_error: deny" in caplog.text
    assert PASSWORD not in caplog.text


def test_redis_down_admits_with_allow_unlimited(
    make_redis_store: RedisStoreFactory, down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store(url=down_url, on_store_error="allow_unlimited", timeout_s=0.25)
    caplog.set_level(logging.WARNING, logger="llmos.gateway")

    for _ in range(5):
        store.admit([principal(rpm=1)], T0)

    assert store.failures.admit_errors == 5
    assert store.failures.admitted_unlimited == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # throttled: one record a minute
    assert "admitting without limits" in warnings[0].getMessage()
    assert "ConnectionError" in warnings[0].getMessage()
    assert f"127.0.0.1:{down_url.rsplit(':', 1)[1].split('/')[0]}" in warnings[0].getMessage()
    assert PASSWORD not in caplog.text


def test_a_hung_redis_times_out_and_denies(make_redis_store: RedisStoreFactory, silent_url: str) -> None:
    store = make_redis_store(url=silent_url, timeout_s=0.1)
    started = time.monotonic()

    with pytest.raises(ServiceUnavailable) as info:
        store.admit([principal(rpm=5)], T0)

    assert time.monotonic() - started < 1.0
    assert isinstance(info.value.__cause__, redis.TimeoutError)
    assert store.failures.admit_errors == 1


def test_charge_with_redis_down_is_logged_and_counted(
    make_redis_store: RedisStoreFactory, down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_redis_store(url=down_url, timeout_s=0.25)

    store.charge([principal(tpm=100), tenant(daily_tokens=1000)], 50, T0)
    store.charge([principal(tpm=100)], 50, T0)

    assert store.failures.charge_errors == 2
    assert store.failures.admit_errors == 0
    assert "token usage of a finished request was not recorded" in caplog.text
    assert PASSWORD not in caplog.text


def test_a_redis_error_reply_fails_closed(
    make_redis_store: RedisStoreFactory, redis_client: redis.Redis
) -> None:
    store = make_redis_store()
    redis_client.set(f"test:limits:principal:{KEY}:rpm", "not a hash")

    with pytest.raises(ServiceUnavailable) as info:
        store.admit([principal(rpm=5)], T0)

    assert isinstance(info.value.__cause__, redis.ResponseError)
    store.charge([principal(tpm=5)], 1, T0)  # another key: fine
    redis_client.set(f"test:limits:principal:{KEY}:tpm", "not a hash")
    store.charge([principal(tpm=5)], 1, T0)
    assert store.failures.charge_errors == 1


def test_redis_going_away_and_coming_back(tmp_path: Path, make_redis_store: RedisStoreFactory) -> None:
    binary = redis_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        store = make_redis_store(url=server.url, timeout_s=0.25)
        assert admits(store, [principal(rpm=5)])
        server.stop()
        with pytest.raises(ServiceUnavailable):
            store.admit([principal(rpm=5)], T0)
        store.charge([principal(tpm=5)], 1, T0)
        assert store.failures.charge_errors == 1
    finally:
        server.stop()


# -- pure helpers ----------------------------------------------------------------------------------


def test_safe_address_drops_credentials() -> None:
    assert (
        safe_address(f"redis://user:{PASSWORD}@cache.internal:6380/2?x=1") == "redis://cache.internal:6380/2"
    )
    assert safe_address("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_malformed_script_replies_are_errors() -> None:
    checks = [Check(principal(rpm=1), "rpm", 1)]

    assert parse_refusals([], checks) == []
    assert parse_refusals([1, b"0.5"], checks)[0].retry_after == 1
    for reply in ([1], [2, b"1"], [0, b"1"], "x", [1, b"nan?"]):
        with pytest.raises(ValueError):
            parse_refusals(reply, checks)
