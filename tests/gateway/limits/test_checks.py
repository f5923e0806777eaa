from __future__ import annotations

import pytest

from gateway.limits.checks import charge_amount, checks_for, choose
from gateway.limits.values import Check, Limits, Refusal, Subject

ALICE = Subject("principal", "key:aaaaaaaaaaaaaaaa", Limits(rpm=10, daily_tokens=1000))
ACME = Subject("tenant", "acme", Limits(rpm=100, tpm=5000))


def test_one_check_per_set_limit_principal_first() -> None:
    assert [(c.subject.scope, c.kind, c.limit) for c in checks_for([ALICE, ACME])] == [
        ("principal", "rpm", 10),
        ("principal", "daily_tokens", 1000),
        ("tenant", "rpm", 100),
        ("tenant", "tpm", 5000),
    ]


def test_kinds_can_be_narrowed() -> None:
    assert [c.kind for c in checks_for([ALICE, ACME], ("tpm", "daily_tokens"))] == ["daily_tokens", "tpm"]


def test_a_repeated_subject_counts_once_with_its_first_limits() -> None:
    again = Subject("principal", ALICE.id, Limits(rpm=1))

    assert checks_for([ALICE, again]) == checks_for([ALICE])


def test_unlimited_subjects_give_no_checks() -> None:
    assert checks_for([Subject("tenant", "acme", Limits())]) == []


def test_choose_reports_the_longest_wait_first_on_ties() -> None:
    a = Refusal(Check(ALICE, "rpm", 10), 6)
    b = Refusal(Check(ACME, "rpm", 100), 6)
    c = Refusal(Check(ALICE, "daily_tokens", 1000), 3600)

    assert choose([a, b]) is a
    assert choose([a, c, b]) is c
    with pytest.raises(ValueError):
        choose([])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_charge_amount_refuses_non_counts(bad: object) -> None:
    with pytest.raises(ValueError):
        charge_amount(bad)  # type: ignore[arg-type]


def test_limits_and_subjects_check_their_values() -> None:
    for bad in (0, -5, True, 1.5):
        with pytest.raises(ValueError):
            Limits(rpm=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Subject("tenant", "", Limits(rpm=1))
    assert Limits().unlimited
    assert not Limits(daily_tokens=1).unlimited
