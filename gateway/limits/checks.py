"""Which buckets a request counts against, and which refusal to report: pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.limits.values import KINDS, Check, Kind, Refusal, Subject


def checks_for(subjects: Iterable[Subject], kinds: Iterable[Kind] = KINDS) -> list[Check]:
    """One check per set limit of the given kinds, in subject order; a repeated subject counts once.

    A subject is identified by ``(scope, id)``; when one is given twice, its first limits apply.
    """
    wanted = tuple(kinds)
    seen: set[tuple[str, str, Kind]] = set()
    checks: list[Check] = []
    for subject in subjects:
        for kind in wanted:
            limit = subject.limits.get(kind)
            ident = (subject.scope, subject.id, kind)
            if limit is None or ident in seen:
                continue
            seen.add(ident)
            checks.append(Check(subject=subject, kind=kind, limit=limit))
    return checks


def choose(refusals: Sequence[Refusal]) -> Refusal:
    """The refusal to report: the longest wait (the request needs every check to pass), first on ties."""
    if not refusals:
        raise ValueError("choose() needs at least one refusal")
    best = refusals[0]
    for refusal in refusals[1:]:
        if refusal.retry_after > best.retry_after:
            best = refusal
    return best


def charge_amount(tokens: int) -> int:
    """Validate a charge: a whole, non-negative number of tokens."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens to charge must be a whole number >= 0, got {tokens!r}")
    return tokens
