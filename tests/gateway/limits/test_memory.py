from __future__ import annotations

import math

from gateway.limits.memory import SWEEP_INTERVAL_S, MemoryLimitStore
from gateway.limits.values import Limits, StoreFailures, Subject

T0 = 1_796_040_000.0  # 2026-11-30T12:00:00Z


def subject(n: int) -> Subject:
    return Subject("principal", f"key:{n:016x}", Limits(rpm=60, tpm=600, daily_tokens=10**6))


def test_idle_buckets_and_past_days_are_swept() -> None:
    store = MemoryLimitStore()
    for n in range(100):
        store.admit([subject(n)], T0)
        store.charge([subject(n)], 10, T0)
    assert len(store) == 300

    store.admit([subject(0)], T0 + 12 * 3600 + SWEEP_INTERVAL_S)  # the next UTC day, all full again

    assert len(store) == 1  # only the bucket just taken from


def test_busy_buckets_are_kept() -> None:
    store = MemoryLimitStore()
    store.admit([subject(2)], T0)  # swept (nothing) at T0
    for _ in range(60):
        store.admit([subject(1)], T0 + 30)  # emptied at T0 + 30

    store.admit([subject(3)], T0 + SWEEP_INTERVAL_S + 0.5)  # sweeps: subject 1 is half full

    assert len(store) == 2  # subjects 1 and 3; subject 2 was full again


def test_an_infinite_interval_never_sweeps() -> None:
    store = MemoryLimitStore(sweep_interval_s=math.inf)
    store.charge([subject(1)], 10, T0)

    store.admit([subject(2)], T0 + 3 * 86400)  # subject 1 long full again, its day long past

    assert len(store) == 3  # subject 1's tpm bucket and daily counter, subject 2's rpm bucket


def test_never_fails() -> None:
    assert MemoryLimitStore().failures == StoreFailures()
