"""subjects_for: a table of principal / tenant / defaults -> subjects."""

from __future__ import annotations

import pytest

from gateway.limits.config import LimitsConfig, LimitValues
from gateway.limits.subjects import subjects_for
from gateway.limits.values import Limits, Subject

CONFIG = LimitsConfig(
    default_principal=LimitValues(rpm=60),
    default_tenant=LimitValues(tpm=100_000),
    tenants={"acme": LimitValues(rpm=1000, daily_tokens=10**7), "free": LimitValues()},
)
KEY = "key:0123456789abcdef"

CASES: list[tuple[str, LimitsConfig, Limits | None, str, list[Subject]]] = [
    (
        "own limits and a listed tenant",
        CONFIG,
        Limits(rpm=5),
        "acme",
        [
            Subject("principal", KEY, Limits(rpm=5)),
            Subject("tenant", "acme", Limits(rpm=1000, daily_tokens=10**7)),
        ],
    ),
    (
        "no own limits: the principal default, whole; unlisted tenant: the tenant default",
        CONFIG,
        None,
        "other",
        [Subject("principal", KEY, Limits(rpm=60)), Subject("tenant", "other", Limits(tpm=100_000))],
    ),
    (
        "a tenant listed with no limits is unlimited, whatever the default",
        CONFIG,
        Limits(tpm=10),
        "free",
        [Subject("principal", KEY, Limits(tpm=10))],
    ),
    ("own limits that are all unlimited are not replaced by the default", CONFIG, Limits(), "free", []),
    ("nothing configured", LimitsConfig(), None, "acme", []),
    (
        "nothing configured, own limits",
        LimitsConfig(),
        Limits(rpm=1),
        "acme",
        [Subject("principal", KEY, Limits(rpm=1))],
    ),
]


@pytest.mark.parametrize(("case", "config", "own", "tenant", "expected"), CASES, ids=[c[0] for c in CASES])
def test_subjects_for(
    case: str, config: LimitsConfig, own: Limits | None, tenant: str, expected: list[Subject]
) -> None:
    assert subjects_for(config, KEY, own, tenant) == expected
