"""Rate limits and token budgets per principal and per tenant (see docs/limits.md).

values.py       Limits, Subject, Check, Refusal, StoreFailures (imports nothing from llmos)
bucket.py       pure token-bucket and UTC-day math
checks.py       which buckets a request counts against; which refusal to report
messages.py     RateLimited / ServiceUnavailable with the client-facing text
store.py        the LimitStore protocol: admit() before a request, charge() after it
memory.py       MemoryLimitStore: in this process, thread-safe
redis_store.py  RedisLimitStore: shared by replicas, one Lua script per operation (lua.py)
failure.py      on_store_error: deny (503) or allow_unlimited; throttled logs, counts
config.py       LimitsConfig, the `limits:` section
subjects.py     subjects_for(): the principal and its tenant with the configured defaults
factory.py      build_store(config)
"""

from gateway.limits.config import LimitsConfig, LimitValues
from gateway.limits.factory import build_store
from gateway.limits.memory import MemoryLimitStore
from gateway.limits.redis_store import RedisLimitStore
from gateway.limits.store import LimitStore
from gateway.limits.subjects import subjects_for
from gateway.limits.values import Limits, StoreFailures, Subject

__all__ = [
    "LimitStore",
    "LimitValues",
    "Limits",
    "LimitsConfig",
    "MemoryLimitStore",
    "RedisLimitStore",
    "StoreFailures",
    "Subject",
    "build_store",
    "subjects_for",
]
