from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import redis

from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import LimitStore
from gateway.limits.values import OnStoreError
from tests.gateway.limits.redis_server import RedisServer, running_redis

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (loopback, free port, no persistence)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an emptied server."""
    with redis_server.client() as client:
        client.flushall()
        yield client


RedisStoreFactory = Callable[..., RedisLimitStore]


@pytest.fixture
def make_redis_store(redis_client: redis.Redis, redis_server: RedisServer) -> Iterator[RedisStoreFactory]:
    """Stores on the test server (each one its own pool, like a separate replica), closed after."""
    stores: list[RedisLimitStore] = []

    def make(
        *,
        url: str | None = None,
        key_prefix: str = "test:limits:",
        on_store_error: OnStoreError = "deny",
        timeout_s: float = 2.0,
    ) -> RedisLimitStore:
        store = RedisLimitStore.from_url(
            url or redis_server.url, key_prefix=key_prefix, on_store_error=on_store_error, timeout_s=timeout_s
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, request: pytest.FixtureRequest) -> Iterator[LimitStore]:
    """The store under test: in memory, or on the real Redis server."""
    if backend == "memory":
        memory = MemoryLimitStore()
        yield memory
        memory.close()
        return
    make: RedisStoreFactory = request.getfixturevalue("make_redis_store")
    yield make(key_prefix=f"suite{next(_prefixes)}:")
