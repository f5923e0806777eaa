"""Pattern detectors for sensitive data, and redaction by operator. Pure.

These are the baseline detectors that feed policy decisions today: national ids, payment
cards, e-mail addresses and credentials, each a regular expression (plus a Luhn check for
cards), the same technique Presidio's pattern recognizers use. Issue 5 adds Presidio's NER
(names, locations, ...) behind the same ``Finding`` type. Type names follow Presidio's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import Counter
from collections.abc import Iterable

from gateway.pseudonym import Pseudonymizer
from gateway.types import Finding, RedactOperator

_PATTERNS: dict[str, re.Pattern[str]] = {
    "US_SSN": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    # Runs of digit groups; cards are searched inside each run (see _cards).
    "CREDIT_CARD": re.compile(r"\b\d(?:[ -]?\d)*\b"),
    "EMAIL_ADDRESS": re.compile(
        r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b"
    ),
    "AWS_ACCESS_KEY": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "PRIVATE_KEY": re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} )?PRIVATE KEY-----"),
    "API_KEY": re.compile(r"\b(?:sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{36}|xox[abp]-[A-Za-z0-9-]{10,})"),
}

ENTITY_TYPES: tuple[str, ...] = tuple(_PATTERNS)

# The longest text any detector can match, for a stream's hold-back window.
MAX_MATCH_CHARS = 320


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)  # int() reads any Unicode decimal digit, as \d matches them
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_GROUP = re.compile(r"\d+")


def card_spans(run: str) -> list[tuple[int, int]]:
    """Card-number candidates inside a run of digit groups: from each group start, the shortest
    span to a group end holding 13-19 digits that passes the Luhn check. ``find`` then keeps
    the first of overlapping findings. (A greedy regex alone would miss a card followed by a
    CVV or preceded by a quantity.) The Presidio card recogniser uses it too."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    found: list[tuple[int, int]] = []
    for i, (start, _) in enumerate(groups):
        digits = 0
        for g_start, g_end in groups[i:]:
            digits += g_end - g_start
            if digits > 19:
                break
            if digits >= 13 and _luhn_ok(re.sub(r"\D", "", run[start:g_end])):
                found.append((start, g_end))
                break
    return found


def _cards(run: str, offset: int) -> list[Finding]:
    return [Finding("CREDIT_CARD", offset + start, offset + end) for start, end in card_spans(run)]


def find(text: str) -> list[Finding]:
    """Every finding in ``text``, ordered by position; overlapping findings keep the first."""
    found: list[Finding] = []
    for etype, pattern in _PATTERNS.items():
        for m in pattern.finditer(text):
            if etype == "CREDIT_CARD":
                found.extend(_cards(m.group(), m.start()))
                continue
            found.append(Finding(etype, m.start(), m.end()))
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    result: list[Finding] = []
    for f in found:
        if result and f.start < result[-1].end:
            continue
        result.append(f)
    return result


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings per entity type: what policy sees (never the values)."""
    return dict(sorted(Counter(f.type for f in findings).items()))


def redact(
    text: str,
    findings: Iterable[Finding],
    entities: Iterable[str],
    operator: RedactOperator,
    key: bytes,
    pseudo: Pseudonymizer | None = None,
) -> str:
    """``text`` with the findings of ``entities`` replaced per ``operator``.

    placeholder: ``<US_SSN>``, or with ``pseudo`` a numbered one that can be restored
    (``<US_SSN_1>``, the same for the same value; see ``gateway.pseudonym``);
    mask: ``*`` for every character; hash: ``<US_SSN:1a2b3c4d>``
    (keyed, so equal values map to equal tags without revealing them); remove: nothing.
    ``block`` is the caller's business (it refuses the text); here it redacts like placeholder.
    """
    wanted = set(entities)
    out: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.type not in wanted or f.start < pos:
            continue
        out.append(text[pos : f.start])
        out.append(replacement(f.type, text[f.start : f.end], operator, key, pseudo))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def replacement(
    entity: str, value: str, operator: RedactOperator, key: bytes, pseudo: Pseudonymizer | None = None
) -> str:
    """What ``redact`` puts in place of ``value``, a finding of type ``entity``."""
    if operator == "mask":
        return "*" * len(value)
    if operator == "hash":
        tag = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:8]
        return f"<{entity}:{tag}>"
    if operator == "remove":
        return ""
    if pseudo is not None:
        return pseudo.placeholder(entity, value)
    return f"<{entity}>"
