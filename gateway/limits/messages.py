"""The client-facing errors of the limits package: what was refused, never a secret.

A principal is named as "this key" (API keys) or "this caller" (any other principal), never by
its id; a tenant is named by its name, which its own members already know.
"""

from __future__ import annotations

from gateway.errors import RateLimited, ServiceUnavailable
from gateway.limits.values import Kind, Refusal, Subject

CODES: dict[Kind, str] = {
    "rpm": "rate_limit_exceeded",
    "tpm": "tokens_per_minute_exceeded",
    "daily_tokens": "daily_budget_exceeded",
}
UNAVAILABLE_CODE = "limits_unavailable"


def holder(subject: Subject) -> str:
    if subject.scope == "tenant":
        return f"tenant {subject.id}"
    return "this key" if subject.id.startswith("key:") else "this caller"


def rate_limited(refusal: Refusal) -> RateLimited:
    check = refusal.check
    who = holder(check.subject)
    wait = f"Retry after {refusal.retry_after} s."
    if check.kind == "rpm":
        message = f"Rate limit reached: {check.limit} requests per minute for {who}. {wait}"
    elif check.kind == "tpm":
        message = f"Rate limit reached: {check.limit} tokens per minute for {who}. {wait}"
    else:
        message = f"Daily token budget of {check.limit} exhausted for {who}; it resets at 00:00 UTC."
    return RateLimited(message, code=CODES[check.kind], retry_after=refusal.retry_after)


def limits_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Request refused: rate limits cannot be checked right now. Retry shortly.",
        code=UNAVAILABLE_CODE,
        retry_after=1,
    )
