"""The output decision applied to generated text as it streams. Pure (the decision is a callback).

Text is released only once it is settled: no detector finding can still grow into it. For
the pattern detectors in ``gateway.findings`` that means everything up to the last whitespace,
except a run of digits and separators before it (card numbers are written in groups) and a
private-key header in progress, and at most ``MAX_MATCH_CHARS`` held in all. Every release is
redacted per the latest output decision; the decision is asked again whenever the findings
change, and once more at the end. A deny raises, so nothing after it is delivered, and the
text that caused it never was.

Non-streamed responses use the same guard (feed everything, then ``finish``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from gateway import findings as F
from gateway.obligations import apply_output
from gateway.pseudonym import partial_placeholder_start
from gateway.scanner import ScanFailed
from gateway.types import Finding, Obligations

# decide(findings by type, completion tokens so far, finish reason or None while streaming)
Decide = Callable[[dict[str, int], int, str | None], Obligations]
Find = Callable[[str], list[Finding]]

_SEPARATORS = frozenset(" -")  # with any Unicode decimal digit: what a card number is written with
_KEY_HEADER = "-----BEGIN"


def safe_boundary(text: str, start: int, *, placeholders: bool = False) -> int:
    """How far ``text`` may be released, given ``text[:start]`` already was. With
    ``placeholders``, a placeholder still being written (``<PERSO``) is held back too, so that
    it can be restored whole."""
    i = len(text) - 1
    while i >= start and not text[i].isspace():
        i -= 1
    boundary = i + 1 if i >= start else start
    # A card number spans spaces: hold a trailing run of digits and separators.
    j = boundary
    while j > start and (text[j - 1].isdecimal() or text[j - 1] in _SEPARATORS):
        j -= 1
    if j < boundary and any(ch.isdecimal() for ch in text[j:boundary]):
        boundary = j
    header = text.rfind(_KEY_HEADER, max(start, boundary - 64), boundary)
    if header != -1:
        boundary = header
    if placeholders:
        partial = partial_placeholder_start(text[:boundary], start)
        if partial is not None:
            boundary = partial
    # Bounded hold-back: no finding is longer than MAX_MATCH_CHARS.
    return max(boundary, len(text) - F.MAX_MATCH_CHARS, start)


class OutputGuard:
    def __init__(
        self, decide: Decide, key: bytes, find: Find = F.find, restore: Callable[[str], str] | None = None
    ) -> None:
        self._decide = decide
        self._key = key
        self._find = find
        self._restore = restore  # placeholders -> values, applied to released text
        self.findings: list[Finding] = []  # released findings, offsets in the whole text (audit)
        self._text = ""
        self._emitted = 0  # characters of _text already released
        self._released_counts: Counter[str] = Counter()  # findings inside released text
        self._asked_with: dict[str, int] | None = None
        self._obligations = Obligations()
        self._tokens = 0

    def feed(self, piece: str, *, release: bool = True) -> str:
        """Add generated text; return what may be delivered now (possibly empty)."""
        self._text += piece
        self._tokens += 1
        return self._release(final=False, finish=None) if release else ""

    def finish(self, completion_tokens: int, finish_reason: str) -> str:
        """The generation ended: decide on everything and return the rest."""
        self._tokens = completion_tokens
        return self._release(final=True, finish=finish_reason)

    def _release(self, *, final: bool, finish: str | None) -> str:
        start = self._emitted
        tail = self._text[start:]
        boundary = (
            len(self._text)
            if final
            else safe_boundary(self._text, start, placeholders=self._restore is not None)
        )
        if boundary <= start:
            return ""  # nothing could be released yet: no need to scan (a scan per word, not per token)
        # Only the unreleased tail needs scanning (released text is settled); one character of
        # context keeps word-boundary matching as it is on the whole text.
        ctx = 1 if start else 0
        try:
            scanned = self._find(self._text[start - ctx :])
        except Exception as exc:  # never release text that could not be scanned
            raise ScanFailed(f"output scan failed: {exc.__class__.__name__}") from exc
        found = [replace(f, start=f.start - ctx, end=f.end - ctx) for f in scanned if f.start >= ctx]
        counts = dict(sorted((self._released_counts + Counter(f.type for f in found)).items()))
        if final or counts != self._asked_with:
            self._obligations = self._decide(counts, self._tokens, finish)  # raises on deny
            self._asked_with = counts
        local = boundary - start
        for f in found:
            if f.start < local < f.end:
                local = f.start
        if local <= 0:
            return ""
        inside = [f for f in found if f.end <= local]
        out = apply_output(tail[:local], inside, self._obligations, self._key)
        self._released_counts.update(f.type for f in inside)
        self.findings.extend(replace(f, start=start + f.start, end=start + f.end) for f in inside)
        self._emitted = start + local
        # Restored values are the caller's own input: restored after the output decision and
        # redaction, which judge what the model produced.
        return self._restore(out) if self._restore is not None else out


def guard_all(
    decide: Decide,
    key: bytes,
    text: str,
    completion_tokens: int,
    finish_reason: str,
    find: Find = F.find,
    restore: Callable[[str], str] | None = None,
) -> tuple[str, list[Finding]]:
    """A whole (non-streamed) response through the guard: the text to deliver, and its findings."""
    guard = OutputGuard(decide, key, find, restore)
    guard.feed(text, release=False)
    return guard.finish(completion_tokens, finish_reason), guard.findings
