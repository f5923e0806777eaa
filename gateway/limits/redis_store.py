"""Limit state in Redis, shared by every gateway replica that points at the same server.

Each operation is one Lua script (``gateway.limits.lua``), so an admit is atomic across all of
its keys and two replicas can never both take the last request of a bucket. Time is the
caller's ``now`` (Unix seconds from each replica's clock), never Redis's: keep replica clocks
in sync (NTP). A replica whose clock runs behind sees no refill until it catches up; one that
runs ahead refills early by at most its skew. Only key expiry uses Redis's own clock.

Keys, under the configured prefix (``llmos:limits:`` by default)::

    {prefix}{scope}:{id}:rpm                  hash {level, cap, ts}  requests per minute
    {prefix}{scope}:{id}:tpm                  hash {level, cap, ts}  tokens per minute
    {prefix}{scope}:{id}:daily:{YYYY-MM-DD}   integer                tokens used that UTC day

An admit touches several keys in one script, so Redis Cluster is not supported; use one Redis
server (or a primary that replicas fail over to). Errors, timeouts included, go to the
``StoreErrorHandler``: fail closed (503) unless ``on_store_error: allow_unlimited``. Calls are
never retried; a call that timed out after Redis ran it has still counted (the safe side).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.limits import bucket
from gateway.limits.checks import charge_amount, checks_for, choose
from gateway.limits.failure import StoreErrorHandler
from gateway.limits.lua import ADMIT, CHARGE
from gateway.limits.messages import rate_limited
from gateway.limits.values import Check, OnStoreError, Refusal, StoreFailures, Subject

DEFAULT_PREFIX = "llmos:limits:"


def redis_key(prefix: str, check: Check, day: str) -> str:
    base = f"{prefix}{check.subject.scope}:{check.subject.id}:"
    return base + (f"daily:{day}" if check.kind == "daily_tokens" else check.kind)


def safe_address(url: str) -> str:
    """``url`` without credentials, query or fragment, for log messages."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def parse_refusals(reply: Any, checks: Sequence[Check]) -> list[Refusal]:
    """Refusals from the admit script's ``{i, wait, ...}`` reply; ValueError when malformed."""
    if not isinstance(reply, list) or len(reply) % 2:
        raise ValueError("unexpected reply from the admit script")
    refusals = []
    for at in range(0, len(reply), 2):
        index, wait = reply[at], reply[at + 1]
        if not isinstance(index, int) or not 1 <= index <= len(checks):
            raise ValueError("unexpected check index from the admit script")
        check = checks[index - 1]
        refusals.append(Refusal(check, bucket.retry_after(check.kind, float(wait))))
    return refusals


class RedisLimitStore:
    """Shared limit state in Redis (redis-py sync client; thread-safe through its pool)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        on_store_error: OnStoreError = "deny",
        name: str = "redis",
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._errors = StoreErrorHandler(on_store_error, name)
        self._admit = client.register_script(ADMIT)
        self._charge = client.register_script(CHARGE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        on_store_error: OnStoreError = "deny",
        timeout_s: float = 0.25,
    ) -> RedisLimitStore:
        """A store on its own connection pool. Every call is bounded by ``timeout_s`` (connect
        and each read) and never retried: a retried script could count a request twice."""
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, key_prefix=key_prefix, on_store_error=on_store_error, name=safe_address(url))

    def admit(self, subjects: Sequence[Subject], now: float) -> None:
        checks = checks_for(subjects)
        if not checks:
            return
        day = bucket.utc_day(now)
        midnight = repr(bucket.seconds_to_midnight(now))
        args: list[str | int] = [repr(float(now))]
        for check in checks:
            args += [check.kind, check.limit, midnight if check.kind == "daily_tokens" else ""]
        try:
            reply = self._admit(keys=[redis_key(self._prefix, c, day) for c in checks], args=args)
            refusals = parse_refusals(reply, checks)
        except (redis.RedisError, OSError, ValueError) as exc:
            self._errors.admit_failed(exc)
            return
        if refusals:
            raise rate_limited(choose(refusals))

    def charge(self, subjects: Sequence[Subject], tokens: int, now: float) -> None:
        amount = charge_amount(tokens)
        checks = checks_for(subjects, ("tpm", "daily_tokens"))
        if not checks or amount == 0:
            return
        day = bucket.utc_day(now)
        args: list[str | int] = [repr(float(now)), amount]
        for check in checks:
            args += [check.kind, check.limit]
        try:
            self._charge(keys=[redis_key(self._prefix, c, day) for c in checks], args=args)
        except (redis.RedisError, OSError) as exc:
            self._errors.charge_failed(exc)

    @property
    def failures(self) -> StoreFailures:
        return self._errors.failures

    def on_fail_open(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` for each request admitted without limits because the store failed."""
        self._errors.on_fail_open = hook

    def close(self) -> None:
        self._client.close()
