from __future__ import annotations

from gateway.limits.config import LimitsConfig
from gateway.limits.factory import build_store
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.values import Limits, Subject
from tests.gateway.limits.redis_server import RedisServer

T0 = 1_796_040_000.0


def test_memory_by_default() -> None:
    store = build_store(LimitsConfig())

    assert isinstance(store, MemoryLimitStore)
    store.close()


def test_redis_backend(redis_server: RedisServer) -> None:
    store = build_store(LimitsConfig.shared(redis_server.url, key_prefix="factory:"))
    try:
        assert isinstance(store, RedisLimitStore)
        store.admit([Subject("tenant", "acme", Limits(rpm=1))], T0)
        with redis_server.client() as client:
            assert client.exists("factory:tenant:acme:rpm") == 1
    finally:
        store.close()
