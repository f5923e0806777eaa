"""Build the configured ``LimitStore`` (called once at startup; connects lazily)."""

from __future__ import annotations

from gateway.limits.config import LimitsConfig
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import LimitStore


def build_store(config: LimitsConfig) -> LimitStore:
    if config.backend == "redis":
        return RedisLimitStore.from_url(
            config.redis_url,
            key_prefix=config.key_prefix,
            on_store_error=config.on_store_error,
            timeout_s=config.timeout_s,
        )
    return MemoryLimitStore()
