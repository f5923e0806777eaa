"""Tool-call arguments: JSON text carried inside a JSON string. Pure.

An assistant message's tool calls carry their ``arguments`` as a string that normally holds a
JSON object. Two things follow for sensitive-data handling:

- JSON escapes can spell text the scanner would not see (``"jane\\u0040example.com"``), while a
  chat template decodes the arguments and shows the model the real characters. So the gateway
  scans and sends the arguments in *canonical* form: strict JSON (``gateway.jsonsafe``) is
  re-serialised the way Hugging Face chat templates serialise it
  (``json.dumps(value, ensure_ascii=False)``), which writes every character as itself except
  ``"``, ``\\`` and control characters. Text that is not strict JSON is kept as it is: it is
  scanned, redacted and sent as plain text.
- Redaction must keep the JSON valid. ``redact`` replaces only characters inside string
  tokens (never quotes or structure), widens a span that would cut an escape sequence, and
  replaces a number token holding a finding (a card number written as a JSON number) by a JSON
  string, so ``{"card": 4111111111111111}`` becomes ``{"card": "<CREDIT_CARD_1>"}``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway import findings as F
from gateway.jsonsafe import JsonRejected, loads_strict
from gateway.pseudonym import Pseudonymizer
from gateway.types import Finding, RedactOperator

# String and number tokens of a valid JSON text. Outside strings only numbers hold digits or a
# minus sign and no other token holds a quote, so a left-to-right scan stays aligned.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')
# One character of a JSON string's content as written: a plain character, an escape sequence,
# or a surrogate pair spelled as two escapes (never cut in half).
_UNIT = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\.|[^\\]", re.DOTALL
)


def canonical(text: str) -> str:
    """The arguments as the gateway scans and sends them (see the module docstring)."""
    try:
        value = loads_strict(text)
    except JsonRejected:
        return text
    return json.dumps(value, ensure_ascii=False)


def restore(text: str, restore_text: Callable[[str], str]) -> str:
    """``restore_text`` (placeholders back to the caller's values) inside the arguments: in
    every JSON string, keys too, re-serialised canonically so that a restored value holding a
    quote or a backslash is escaped; text that is not strict JSON is restored as text."""
    try:
        value = loads_strict(text)
    except JsonRejected:
        return restore_text(text)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return restore_text(v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {restore_text(k): walk(x) for k, x in v.items()}
        return v

    return json.dumps(walk(value), ensure_ascii=False)


def redact(
    text: str,
    findings: Iterable[Finding],
    entities: Iterable[str],
    operator: RedactOperator,
    key: bytes,
    pseudo: Pseudonymizer | None = None,
) -> str:
    """``gateway.findings.redact`` for arguments: valid JSON stays valid JSON (module docstring)."""
    try:
        loads_strict(text)
    except JsonRejected:
        return F.redact(text, findings, entities, operator, key, pseudo)
    wanted = set(entities)
    pieces = _pieces(text, [f for f in findings if f.type in wanted])
    out: list[str] = []
    pos = 0
    for piece in pieces:
        out.append(text[pos : piece.start])
        if piece.number:
            value = text[piece.value_start : piece.value_end]
            out.append(
                json.dumps(F.replacement(piece.type, value, operator, key, pseudo), ensure_ascii=False)
            )
        else:
            value = _decode(text[piece.start : piece.end])
            out.append(_escape(F.replacement(piece.type, value, operator, key, pseudo)))
        pos = piece.end
    out.append(text[pos:])
    return "".join(out)


@dataclass(frozen=True)
class _Piece:
    """A span to replace: inside one string token's content, or one whole number token."""

    start: int
    end: int
    type: str
    number: bool
    value_start: int  # for a number: the finding's part of it (the value that is replaced)
    value_end: int


def _pieces(text: str, findings: list[Finding]) -> list[_Piece]:
    if not findings:
        return []
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    starts = [s for s, _ in tokens]
    pieces: list[_Piece] = []
    for f in sorted(findings, key=lambda f: f.start):
        i = max(bisect.bisect_right(starts, f.start) - 1, 0)
        for start, end in tokens[i:]:
            if start >= f.end:
                break
            if end <= f.start:
                continue
            if text[start] != '"':
                lo, hi = max(start, f.start), min(end, f.end)
                pieces.append(_Piece(start, end, f.type, True, lo, hi))
                continue
            lo, hi = max(start + 1, f.start), min(end - 1, f.end)
            if lo >= hi:
                continue
            lo, hi = _snap(text, start + 1, end - 1, lo, hi)
            pieces.append(_Piece(lo, hi, f.type, False, lo, hi))
    return _merge(pieces)


def _snap(text: str, content_start: int, content_end: int, lo: int, hi: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` to whole characters as written (never half an escape sequence)."""
    new_lo, new_hi = lo, hi
    for m in _UNIT.finditer(text, content_start, content_end):
        if m.start() <= lo < m.end():
            new_lo = m.start()
        if m.start() < hi <= m.end():
            new_hi = m.end()
            break
    return new_lo, new_hi


def _merge(pieces: list[_Piece]) -> list[_Piece]:
    """Pieces in order without overlaps; overlapping ones (always in the same token) are joined."""
    merged: list[_Piece] = []
    for p in sorted(pieces, key=lambda p: (p.start, p.end)):
        if merged and p.start < merged[-1].end:
            last = merged[-1]
            if p.end > last.end:
                merged[-1] = _Piece(
                    last.start,
                    p.end,
                    last.type,
                    last.number,
                    last.value_start,
                    max(last.value_end, p.value_end),
                )
            continue
        merged.append(p)
    return merged


def _decode(written: str) -> str:
    """The characters a span of string content stands for (as written, if it cannot be decoded:
    half of a surrogate pair spelled as two escapes)."""
    try:
        value = str(json.loads('"' + written + '"'))
        value.encode("utf-8")
    except ValueError:  # JSONDecodeError, UnicodeEncodeError
        return written
    return value


def _escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]
