from __future__ import annotations

import pytest

from gateway.errors import RateLimited
from gateway.limits.messages import limits_unavailable, rate_limited
from gateway.limits.values import Check, Kind, Limits, Refusal, Subject

KEY = Subject("principal", "key:0123456789abcdef", Limits(rpm=60))
OIDC = Subject("principal", "oidc:https://idp.example/|alice@example.com", Limits(rpm=60))
ACME = Subject("tenant", "acme", Limits(rpm=60))

CASES: list[tuple[Subject, Kind, int, int, str, str]] = [
    (
        KEY,
        "rpm",
        60,
        1,
        "rate_limit_exceeded",
        "Rate limit reached: 60 requests per minute for this key. Retry after 1 s.",
    ),
    (
        OIDC,
        "rpm",
        5,
        12,
        "rate_limit_exceeded",
        "Rate limit reached: 5 requests per minute for this caller. Retry after 12 s.",
    ),
    (
        ACME,
        "tpm",
        10000,
        3,
        "tokens_per_minute_exceeded",
        "Rate limit reached: 10000 tokens per minute for tenant acme. Retry after 3 s.",
    ),
    (
        ACME,
        "daily_tokens",
        100000,
        3600,
        "daily_budget_exceeded",
        "Daily token budget of 100000 exhausted for tenant acme; it resets at 00:00 UTC.",
    ),
    (
        KEY,
        "daily_tokens",
        10,
        5,
        "daily_budget_exceeded",
        "Daily token budget of 10 exhausted for this key; it resets at 00:00 UTC.",
    ),
]


@pytest.mark.parametrize(("subject", "kind", "limit", "retry", "code", "message"), CASES)
def test_rate_limited(subject: Subject, kind: Kind, limit: int, retry: int, code: str, message: str) -> None:
    error = rate_limited(Refusal(Check(subject, kind, limit), retry))

    assert isinstance(error, RateLimited)
    assert (error.status, error.type, error.code, error.retry_after, error.message) == (
        429,
        "rate_limit_error",
        code,
        retry,
        message,
    )
    assert "0123456789abcdef" not in error.message
    assert "alice" not in error.message


def test_limits_unavailable() -> None:
    error = limits_unavailable()

    assert (error.status, error.type, error.code, error.retry_after) == (
        503,
        "service_unavailable_error",
        "limits_unavailable",
        1,
    )
