"""The behaviour both stores share: the same suite, on MemoryLimitStore and on a real Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from gateway.errors import RateLimited
from gateway.limits.store import LimitStore
from gateway.limits.values import Limits, Subject

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
KEY = "key:0123456789abcdef"


def principal(
    rpm: int | None = None, tpm: int | None = None, daily: int | None = None, id: str = KEY
) -> Subject:
    return Subject("principal", id, Limits(rpm=rpm, tpm=tpm, daily_tokens=daily))


def tenant(
    rpm: int | None = None, tpm: int | None = None, daily: int | None = None, id: str = "acme"
) -> Subject:
    return Subject("tenant", id, Limits(rpm=rpm, tpm=tpm, daily_tokens=daily))


def admits(store: LimitStore, subjects: list[Subject], now: float) -> bool:
    try:
        store.admit(subjects, now)
    except RateLimited:
        return False
    return True


def refused(store: LimitStore, subjects: list[Subject], now: float) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        store.admit(subjects, now)
    return info.value


# -- requests per minute ---------------------------------------------------------------------------


# (rpm, Retry-After once the burst is used: 60 / rpm seconds, rounded up, at least 1)
@pytest.mark.parametrize(("rpm", "retry_after"), [(1, 60), (2, 30), (7, 9), (45, 2), (60, 1), (600, 1)])
def test_rpm_burst_then_429_with_retry_after(store: LimitStore, rpm: int, retry_after: int) -> None:
    subjects = [principal(rpm=rpm)]

    assert [admits(store, subjects, T0) for _ in range(rpm)] == [True] * rpm
    error = refused(store, subjects, T0)

    assert (error.status, error.code, error.retry_after) == (429, "rate_limit_exceeded", retry_after)
    assert error.message == (
        f"Rate limit reached: {rpm} requests per minute for this key. Retry after {retry_after} s."
    )


def test_rpm_refills_continuously(store: LimitStore) -> None:
    subjects = [principal(rpm=60)]
    for _ in range(60):
        store.admit(subjects, T0)

    assert refused(store, subjects, T0 + 0.5).retry_after == 1
    assert admits(store, subjects, T0 + 1.0)
    assert not admits(store, subjects, T0 + 1.0)
    assert [admits(store, subjects, T0 + 11.0) for _ in range(11)] == [True] * 10 + [False]


def test_retry_after_shrinks_as_time_passes(store: LimitStore) -> None:
    subjects = [principal(rpm=1)]
    store.admit(subjects, T0)

    assert refused(store, subjects, T0 + 30.0).retry_after == 30
    assert refused(store, subjects, T0 + 59.5).retry_after == 1
    assert admits(store, subjects, T0 + 60.0)


def test_refill_never_exceeds_the_burst(store: LimitStore) -> None:
    subjects = [principal(rpm=3)]
    store.admit(subjects, T0)

    assert [admits(store, subjects, T0 + 10_000.0) for _ in range(4)] == [True, True, True, False]


def test_clock_going_backwards_adds_nothing(store: LimitStore) -> None:
    subjects = [principal(rpm=60)]
    for _ in range(60):
        store.admit(subjects, T0)

    assert not admits(store, subjects, T0 - 100.0)
    assert not admits(store, subjects, T0 + 0.5)
    assert admits(store, subjects, T0 + 1.0)


def test_principals_and_scopes_have_separate_buckets(store: LimitStore) -> None:
    store.admit([principal(rpm=1)], T0)

    assert not admits(store, [principal(rpm=1)], T0)
    assert admits(store, [principal(rpm=1, id="key:fedcba9876543210")], T0)
    assert admits(store, [Subject("tenant", KEY, Limits(rpm=1))], T0)


def test_oidc_principal_is_named_as_caller_not_by_id(store: LimitStore) -> None:
    subjects = [principal(rpm=1, id="oidc:https://idp.example|alice")]
    store.admit(subjects, T0)

    error = refused(store, subjects, T0)

    assert "for this caller" in error.message
    assert "alice" not in error.message


# -- tokens per minute -----------------------------------------------------------------------------


def test_tpm_debt_after_a_large_charge_blocks_until_refilled(store: LimitStore) -> None:
    subjects = [tenant(tpm=1000)]
    store.admit(subjects, T0)
    store.charge(subjects, 1500, T0)  # 500 tokens in debt; refills at 1000/60 tokens per second

    error = refused(store, subjects, T0)
    assert (error.code, error.retry_after) == ("tokens_per_minute_exceeded", 31)
    assert error.message == "Rate limit reached: 1000 tokens per minute for tenant acme. Retry after 31 s."
    assert refused(store, subjects, T0 + 29.0).retry_after == 2
    assert refused(store, subjects, T0 + 30.0).retry_after == 1  # at 0: not in debt, but nothing left
    assert admits(store, subjects, T0 + 31.0)


def test_tpm_admits_while_not_in_debt_so_one_request_may_overshoot(store: LimitStore) -> None:
    subjects = [principal(tpm=100)]
    store.charge(subjects, 99, T0)

    assert admits(store, subjects, T0)  # one token left: admitted, whatever it will use
    store.charge(subjects, 5000, T0)
    assert refused(store, subjects, T0).retry_after == 3000  # 4999 in debt at 100/60 per s: 2999.4 s


def test_tpm_admission_takes_no_tokens(store: LimitStore) -> None:
    subjects = [principal(tpm=10)]

    assert all(admits(store, subjects, T0) for _ in range(100))


def test_charge_never_raises_rate_limited(store: LimitStore) -> None:
    subjects = [principal(rpm=1, tpm=10, daily=10), tenant(rpm=1, tpm=10, daily=10)]

    for _ in range(5):
        store.charge(subjects, 1_000_000, T0)

    assert refused(store, subjects, T0).code in ("tokens_per_minute_exceeded", "daily_budget_exceeded")


def test_charge_rejects_negative_tokens(store: LimitStore) -> None:
    with pytest.raises(ValueError, match="tokens to charge"):
        store.charge([principal(tpm=10)], -1, T0)


def test_charging_zero_tokens_changes_nothing(store: LimitStore) -> None:
    subjects = [principal(tpm=1, daily=1)]
    store.charge(subjects, 0, T0)

    assert admits(store, subjects, T0)


# -- daily token budget ----------------------------------------------------------------------------

LATE = datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp()
NEXT_MIDNIGHT = datetime(2026, 12, 1, 0, 0, tzinfo=UTC).timestamp()


def test_daily_budget_exhausted_until_next_utc_midnight(store: LimitStore) -> None:
    subjects = [tenant(daily=100_000)]
    store.charge(subjects, 99_999, LATE)
    assert admits(store, subjects, LATE)  # used < budget
    store.charge(subjects, 1, LATE)

    error = refused(store, subjects, LATE)
    assert (error.status, error.code, error.retry_after) == (429, "daily_budget_exceeded", 3600)
    assert error.message == (
        "Daily token budget of 100000 exhausted for tenant acme; it resets at 00:00 UTC."
    )
    assert refused(store, subjects, NEXT_MIDNIGHT - 0.5).retry_after == 1
    assert admits(store, subjects, NEXT_MIDNIGHT)
    store.charge(subjects, 99_999, NEXT_MIDNIGHT + 60)
    assert admits(store, subjects, NEXT_MIDNIGHT + 60)  # a new day, a new budget


def test_daily_budget_of_a_key(store: LimitStore) -> None:
    subjects = [principal(daily=10)]
    store.charge(subjects, 10, T0)

    error = refused(store, subjects, T0)

    assert error.message == "Daily token budget of 10 exhausted for this key; it resets at 00:00 UTC."
    assert error.retry_after == 12 * 3600


# -- tenants, several subjects, all-or-nothing -----------------------------------------------------


def test_tenant_limit_is_shared_by_its_principals(store: LimitStore) -> None:
    alice = [principal(rpm=100, id="key:aaaaaaaaaaaaaaaa"), tenant(rpm=3)]
    bob = [principal(rpm=100, id="key:bbbbbbbbbbbbbbbb"), tenant(rpm=3)]

    assert [admits(store, alice, T0), admits(store, bob, T0), admits(store, alice, T0)] == [True] * 3
    error = refused(store, bob, T0)

    assert error.message == "Rate limit reached: 3 requests per minute for tenant acme. Retry after 20 s."
    assert admits(store, [principal(rpm=100, id="key:cccccccccccccccc"), tenant(rpm=3, id="other")], T0)


def test_tenant_tokens_are_shared_by_its_principals(store: LimitStore) -> None:
    alice = [principal(id="key:aaaaaaaaaaaaaaaa", tpm=10_000), tenant(tpm=100, daily=1000)]
    bob = [principal(id="key:bbbbbbbbbbbbbbbb", tpm=10_000), tenant(tpm=100, daily=1000)]
    store.charge(alice, 150, T0)

    error = refused(store, bob, T0)

    assert "tenant acme" in error.message
    assert error.code == "tokens_per_minute_exceeded"


def test_a_refused_tenant_check_takes_nothing_from_the_principal(store: LimitStore) -> None:
    both = [principal(rpm=2), tenant(rpm=1)]
    store.admit(both, T0)  # principal 1 left, tenant 0 left

    assert refused(store, both, T0).message.endswith("for tenant acme. Retry after 60 s.")
    assert refused(store, both, T0).code == "rate_limit_exceeded"
    # the two refusals took nothing from the principal: it still has its one request
    assert admits(store, [principal(rpm=2)], T0)
    assert not admits(store, [principal(rpm=2)], T0)


def test_a_refused_budget_takes_nothing_from_any_rpm_bucket(store: LimitStore) -> None:
    both = [principal(rpm=1), tenant(rpm=1, daily=5)]
    store.charge(both, 5, T0)

    assert refused(store, both, T0).code == "daily_budget_exceeded"
    assert admits(store, [principal(rpm=1), tenant(rpm=1)], T0)


def test_the_longest_wait_is_reported(store: LimitStore) -> None:
    subjects = [principal(rpm=60), tenant(daily=10)]
    for _ in range(60):
        store.admit(subjects, T0)
    store.charge(subjects, 10, T0)

    error = refused(store, subjects, T0)

    assert (error.code, error.retry_after) == ("daily_budget_exceeded", 12 * 3600)


def test_no_limits_means_unlimited(store: LimitStore) -> None:
    subjects = [principal(), tenant()]

    assert all(admits(store, subjects, T0) for _ in range(1000))
    assert all(admits(store, [], T0) for _ in range(10))
    store.charge(subjects, 10**9, T0)
    store.charge([], 10**9, T0)
    assert admits(store, subjects, T0)


def test_a_subject_given_twice_counts_once(store: LimitStore) -> None:
    subjects = [principal(rpm=2), principal(rpm=2)]

    assert [admits(store, subjects, T0) for _ in range(3)] == [True, True, False]


# -- concurrency -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rpm", [1, 50])
def test_many_threads_admit_exactly_the_limit(store: LimitStore, rpm: int) -> None:
    subjects = [principal(rpm=rpm), tenant(rpm=10 * rpm)]
    threads, attempts = 16, 10
    barrier = threading.Barrier(threads)
    admitted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        mine = [admits(store, subjects, T0) for _ in range(attempts)]
        with lock:
            admitted.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert len(admitted) == threads * attempts
    assert sum(admitted) == rpm


def test_concurrent_charges_all_count(store: LimitStore) -> None:
    subjects = [tenant(daily=8 * 100)]
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            store.charge(subjects, 1, T0)

    pool = [threading.Thread(target=worker) for _ in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert refused(store, subjects, T0).code == "daily_budget_exceeded"
    assert admits(store, [tenant(daily=801)], T0)  # exactly 800 used


# -- limit changes ---------------------------------------------------------------------------------


def test_raising_rpm_gives_the_extra_requests_at_once(store: LimitStore) -> None:
    store.admit([principal(rpm=1)], T0)

    assert [admits(store, [principal(rpm=5)], T0) for _ in range(5)] == [True] * 4 + [False]


def test_lowering_rpm_keeps_what_was_used(store: LimitStore) -> None:
    for _ in range(10):
        store.admit([principal(rpm=60)], T0)

    assert [admits(store, [principal(rpm=20)], T0) for _ in range(11)] == [True] * 10 + [False]


def test_lowering_rpm_below_use_empties_the_bucket_without_debt(store: LimitStore) -> None:
    for _ in range(55):
        store.admit([principal(rpm=60)], T0)

    assert refused(store, [principal(rpm=10)], T0).retry_after == 6  # empty, 10 per minute: 6 s
    assert admits(store, [principal(rpm=10)], T0 + 6.0)


def test_a_changed_tpm_keeps_its_debt_or_frees_headroom(store: LimitStore) -> None:
    store.charge([tenant(tpm=1000)], 1200, T0)  # 200 in debt

    assert refused(store, [tenant(tpm=500)], T0).retry_after == 25  # debt kept: 200 at 500/60 per s
    assert admits(store, [tenant(tpm=5000)], T0)  # 1200 used of 5000


def test_a_raised_daily_budget_admits_again(store: LimitStore) -> None:
    store.charge([tenant(daily=100)], 100, T0)

    assert not admits(store, [tenant(daily=100)], T0)
    assert admits(store, [tenant(daily=101)], T0)
