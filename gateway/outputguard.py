"""The output decision applied to generated text as it streams. Pure (the decision is a callback).

Text is released only once it is settled: no detector finding can still grow into it. That
means everything up to the last whitespace, except:

- a trailing run of *entity-like* words: words whose first letter is upper-case or that hold
  a digit (a name, a place, an IBAN, a phone or card number written in groups: Presidio's NER
  and number recognisers can still extend a match over them), held until a word that is
  neither follows, so "John" is not released before we know whether "Smith" comes next;
- a private-key header in progress, and a placeholder being written (when restoring);
- at most ``MAX_MATCH_CHARS`` held in all (the bound on hold-back), except that a word is
  never cut: a single word longer than that (a JWT, a base64 blob) is held whole.

Each scan covers the unreleased tail plus up to ``CONTEXT_CHARS`` of released text before it
(from a word start), so NER sees the words around a name; a finding that reaches back into
released text is redacted from where release stopped. Every release is redacted per the
latest output decision; the decision is asked again whenever the findings change, and once
more at the end. A deny raises, so nothing after it is delivered, and the text that caused it
never was.

Non-streamed responses use the same guard (feed everything, then ``finish``).

Tool calls (an upstream model's) arrive whole at the end (``finish_calls``): their arguments
are scanned, the final decision sees their findings with the text's, and they are redacted
(JSON kept valid, ``gateway.toolargs``) and restored like the text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from gateway import findings as F
from gateway import toolargs
from gateway.obligations import apply_output
from gateway.pseudonym import partial_placeholder_start
from gateway.scanner import ScanFailed
from gateway.types import Finding, Obligations, ToolCall

# decide(findings by type, completion tokens so far, finish reason or None while streaming)
Decide = Callable[[dict[str, int], int, str | None], Obligations]
Find = Callable[[str], list[Finding]]

_KEY_HEADER = "-----BEGIN"
CONTEXT_CHARS = 64  # released text re-scanned before the tail, for NER context


def _entity_like(word: str) -> bool:
    """Could this word be part of a multi-word entity: capitalised, or holding a digit."""
    first = next((ch for ch in word if ch.isalpha()), "")
    return first.isupper() or any(ch.isdecimal() for ch in word)


def _hold_entity_words(text: str, start: int, boundary: int) -> int:
    """Move ``boundary`` back over a trailing run of entity-like words."""
    j = boundary
    while j > start:
        k = j
        while k > start and text[k - 1].isspace():
            k -= 1
        w = k
        while w > start and not text[w - 1].isspace():
            w -= 1
        if w == k or not _entity_like(text[w:k]):
            break
        j = w
    return j


def safe_boundary(text: str, start: int, *, placeholders: bool = False) -> int:
    """How far ``text`` may be released, given ``text[:start]`` already was. With
    ``placeholders``, a placeholder still being written (``<PERSO``) is held back too, so that
    it can be restored whole."""
    i = len(text) - 1
    while i >= start and not text[i].isspace():
        i -= 1
    boundary = i + 1 if i >= start else start
    boundary = _hold_entity_words(text, start, boundary)
    header = text.rfind(_KEY_HEADER, max(start, boundary - 64), boundary)
    if header != -1:
        boundary = header
    if placeholders:
        partial = partial_placeholder_start(text[:boundary], start)
        if partial is not None:
            boundary = partial
    # Bounded hold-back: past MAX_MATCH_CHARS held, release up to the start of the word there,
    # never inside a word (a JWT or a key can be longer than the bound and only matches whole).
    forced = len(text) - F.MAX_MATCH_CHARS
    if forced > boundary:
        while forced > boundary and not text[forced - 1].isspace():
            forced -= 1
        boundary = forced
    return max(boundary, start)


class OutputGuard:
    def __init__(
        self, decide: Decide, key: bytes, find: Find = F.find, restore: Callable[[str], str] | None = None
    ) -> None:
        self._decide = decide
        self._key = key
        self._find = find
        self._restore = restore  # placeholders -> values, applied to released text
        self.findings: list[Finding] = []  # released findings, offsets in the whole text (audit)
        self.call_findings: list[list[Finding]] = []  # per tool call, offsets in its arguments
        self._call_counts: Counter[str] = Counter()
        self._text = ""
        self._emitted = 0  # characters of _text already released
        self._released_counts: Counter[str] = Counter()  # findings inside released text
        self._asked_with: dict[str, int] | None = None
        self._obligations = Obligations()
        self._tokens = 0

    @property
    def released_chars(self) -> int:
        """How much of the generated text has been released (its length before redaction)."""
        return self._emitted

    @property
    def held_chars(self) -> int:
        """Generated text held back, not yet released."""
        return len(self._text) - self._emitted

    def feed(self, piece: str, *, release: bool = True) -> str:
        """Add generated text; return what may be delivered now (possibly empty)."""
        self._text += piece
        self._tokens += 1
        return self._release(final=False, finish=None) if release else ""

    def finish(self, completion_tokens: int, finish_reason: str) -> str:
        """The generation ended: decide on everything and return the rest."""
        self._tokens = completion_tokens
        return self._release(final=True, finish=finish_reason)

    def finish_calls(
        self, completion_tokens: int, finish_reason: str, calls: tuple[ToolCall, ...]
    ) -> tuple[str, tuple[ToolCall, ...]]:
        """``finish`` for an answer that also called functions: the rest of the text, and the
        calls as the caller will see them."""
        try:
            self.call_findings = [self._find(c.arguments) for c in calls]
        except Exception as exc:  # never release arguments that could not be scanned
            raise ScanFailed(f"output scan failed: {exc.__class__.__name__}") from exc
        self._call_counts = Counter(f.type for found in self.call_findings for f in found)
        text = self.finish(completion_tokens, finish_reason)
        out = []
        for call, found in zip(calls, self.call_findings, strict=True):
            arguments = apply_output(call.arguments, found, self._obligations, self._key, arguments=True)
            if self._restore is not None:
                arguments = toolargs.restore(arguments, self._restore)
            out.append(replace(call, arguments=arguments))
        return text, tuple(out)

    def _release(self, *, final: bool, finish: str | None) -> str:
        start = self._emitted
        tail = self._text[start:]
        boundary = (
            len(self._text)
            if final
            else safe_boundary(self._text, start, placeholders=self._restore is not None)
        )
        if boundary <= start and not final:
            return ""  # nothing could be released yet: no need to scan (a scan per word, not per token)
        # Only the unreleased tail needs scanning (released text is settled), with some released
        # text before it as context (from a word start). At the end with everything released
        # there is nothing to scan, but the final decision is still asked (tool calls, finish).
        ctx = _context_start(self._text, start)
        try:
            scanned = self._find(self._text[ctx:]) if boundary > start else []
        except Exception as exc:  # never release text that could not be scanned
            raise ScanFailed(f"output scan failed: {exc.__class__.__name__}") from exc
        found = [
            replace(f, start=max(f.start + ctx, start) - start, end=f.end + ctx - start)
            for f in scanned
            if f.end + ctx > start  # not wholly inside released text; clipped where release stopped
        ]
        counts = dict(
            sorted((self._released_counts + self._call_counts + Counter(f.type for f in found)).items())
        )
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


def _context_start(text: str, start: int) -> int:
    """Where the scan begins: up to ``CONTEXT_CHARS`` before ``start``, at a word start."""
    if start == 0:
        return 0
    ctx = max(0, start - CONTEXT_CHARS)
    while ctx < start and ctx > 0 and not text[ctx - 1].isspace():
        ctx += 1
    return ctx


def guard_all(
    decide: Decide,
    key: bytes,
    text: str,
    completion_tokens: int,
    finish_reason: str,
    find: Find = F.find,
    restore: Callable[[str], str] | None = None,
    calls: tuple[ToolCall, ...] = (),
) -> tuple[str, tuple[ToolCall, ...], list[Finding], list[list[Finding]]]:
    """A whole (non-streamed) response through the guard: the text and tool calls to deliver,
    the text's findings and each call's."""
    guard = OutputGuard(decide, key, find, restore)
    guard.feed(text, release=False)
    text, calls = guard.finish_calls(completion_tokens, finish_reason, calls)
    return text, calls, guard.findings, guard.call_findings
