"""Pure token-bucket and calendar math, shared by both stores (the Lua scripts mirror it).

A bucket holds ``level`` tokens at time ``updated`` under a ``capacity`` (the per-minute limit).
It refills continuously at ``capacity / 60`` tokens per second and never above ``capacity``. A
requests-per-minute bucket admits while ``level >= 1`` and takes 1; a tokens-per-minute bucket
admits while ``level > 0`` and is charged afterwards, so it may go negative (debt).

When the limit changes, the bucket keeps what was used, not what was left: the new level is
``new - (old - level)``, so raising a limit gives the extra headroom at once and lowering it
counts past use against the new limit. Lowering never creates new debt: the level is floored
at ``min(level, 0)`` (an rpm bucket is at most emptied; an existing tpm debt is kept as it is).
The change is applied as of the bucket's last update, and it refills at the new rate from there.

Times are Unix seconds (``time.time()``). A clock that goes backwards never adds tokens. Unix
time has no leap seconds, so a UTC day is exactly 86400 s and day boundaries are multiples of it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from gateway.limits.values import Kind

SECONDS_PER_MINUTE = 60.0
SECONDS_PER_DAY = 86400
# An idle bucket is forgotten this long after it would be full again (a full bucket and no
# bucket are the same state), so a little clock skew between replicas cannot reset it early.
IDLE_MARGIN_S = 60.0
# A daily counter lives two days: long enough to outlive its day in every time zone skew.
DAILY_TTL_S = 2 * SECONDS_PER_DAY
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class Bucket:
    level: float  # tokens available at ``updated``; negative is debt
    capacity: int  # the per-minute limit this level was computed under
    updated: float  # Unix seconds


def full(capacity: int, now: float) -> Bucket:
    return Bucket(level=float(capacity), capacity=capacity, updated=now)


def adapt(level: float, old: int, new: int) -> float:
    """The level after the limit changes from ``old`` to ``new``: usage is kept, debt never grows."""
    return max(new - (old - level), min(level, 0.0))


def current(state: Bucket | None, capacity: int, now: float) -> Bucket:
    """``state`` as of ``now`` under ``capacity``: adapted to a changed limit as of its last
    update, then refilled at the new rate (so the answer does not depend on when, or whether, an
    adapted state was written back)."""
    if state is None:
        return full(capacity, now)
    level = state.level
    if state.capacity != capacity:
        level = adapt(level, state.capacity, capacity)
    elapsed = max(0.0, now - state.updated)
    level = min(float(capacity), level + elapsed * capacity / SECONDS_PER_MINUTE)
    return Bucket(level=level, capacity=capacity, updated=max(state.updated, now))


def take(bucket: Bucket, amount: float) -> Bucket:
    return Bucket(level=bucket.level - amount, capacity=bucket.capacity, updated=bucket.updated)


def request_wait(bucket: Bucket) -> float | None:
    """None when a request may be taken (level >= 1), else seconds until it may."""
    if bucket.level >= 1.0:
        return None
    return (1.0 - bucket.level) * SECONDS_PER_MINUTE / bucket.capacity


def debt_wait(bucket: Bucket) -> float | None:
    """None when a tokens bucket is not in debt (level > 0), else seconds until it is not."""
    if bucket.level > 0.0:
        return None
    return -bucket.level * SECONDS_PER_MINUTE / bucket.capacity


def seconds_to_full(bucket: Bucket) -> float:
    return max(0.0, bucket.capacity - bucket.level) * SECONDS_PER_MINUTE / bucket.capacity


def is_full(bucket: Bucket) -> bool:
    return bucket.level >= bucket.capacity


def retry_after(kind: Kind, wait: float) -> int:
    """Whole seconds for Retry-After: at least 1, and long enough that retrying then succeeds.

    A tokens bucket needs its level strictly above 0, so an exact wait is rounded past.
    """
    if kind == "tpm":
        return max(1, math.floor(wait) + 1)
    return max(1, math.ceil(wait))


def utc_day(now: float) -> str:
    """The UTC calendar day of ``now``, as ``YYYY-MM-DD``."""
    return (_EPOCH + dt.timedelta(days=math.floor(now / SECONDS_PER_DAY))).isoformat()


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` until the next 00:00 UTC (in (0, 86400])."""
    return (math.floor(now / SECONDS_PER_DAY) + 1) * SECONDS_PER_DAY - now


def daily_wait(used: int, budget: int, now: float) -> float | None:
    """None while ``used < budget``, else seconds until the budget resets at 00:00 UTC."""
    if used < budget:
        return None
    return seconds_to_midnight(now)
