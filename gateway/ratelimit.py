"""Per-principal request rate limits: a token bucket per key, pure and in memory.

Keys created with ``--rpm N`` may make N requests per minute (bursting up to N). Issue 4 adds
tokens-per-minute, tenant limits and daily budgets on top of the same bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    capacity: float
    refill_per_s: float
    tokens: float
    updated: float

    @classmethod
    def per_minute(cls, rpm: int, now: float) -> TokenBucket:
        return cls(capacity=float(rpm), refill_per_s=rpm / 60.0, tokens=float(rpm), updated=now)

    def take(self, now: float, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens. Returns None when allowed, else seconds until it would be."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return None
        return (cost - self.tokens) / self.refill_per_s


class RateLimiter:
    """Buckets by principal id; a principal without a limit is never limited."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, principal_id: str, rpm: int | None, now: float) -> int | None:
        """None when allowed, else the whole seconds to put in Retry-After."""
        if rpm is None:
            return None
        bucket = self._buckets.get(principal_id)
        if bucket is None or bucket.capacity != rpm:
            bucket = self._buckets[principal_id] = TokenBucket.per_minute(rpm, now)
        wait = bucket.take(now)
        return None if wait is None else max(1, math.ceil(wait))
