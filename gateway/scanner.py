"""Finding sensitive data in texts, off the event loop, failing closed.

A ``Scanner`` is anything with ``find(text) -> list[Finding]`` that is safe to call from a
worker thread: the built-in pattern detectors (``gateway.findings``) or the Presidio engine
(``gateway.pii``). ``scan_texts`` runs one over a request's texts with a time limit, in a
thread, or awaiting its ``find_many_async`` where it has one (Presidio: no thread waits while
the texts queue for its worker); any error or timeout raises ``ScanFailed``, which the
pipeline turns into a denial (503) unless configuration names the endpoint as allowed to go
unscanned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from gateway import findings as F
from gateway.errors import LlmosError
from gateway.pii.config import PiiConfig
from gateway.types import Finding


class ScanFailed(LlmosError):
    """The scanner failed or took too long; the text was not scanned."""


class TextTooLarge(LlmosError):
    """A text is longer than the scanner accepts (``pii.max_text_chars``): the client's error."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a text is over {limit} characters")
        self.limit = limit


class Scanner(Protocol):
    @property
    def name(self) -> str: ...

    def find(self, text: str) -> list[Finding]: ...

    def find_many(self, texts: Sequence[str]) -> list[list[Finding]]: ...

    def close(self) -> None: ...


class PatternScanner:
    """The regular-expression detectors of ``gateway.findings``."""

    name = "patterns"

    def find(self, text: str) -> list[Finding]:
        return F.find(text)

    def find_many(self, texts: Sequence[str]) -> list[list[Finding]]:
        return [F.find(t) for t in texts]

    def close(self) -> None:
        return None


class DisabledScanner:
    """No scanning at all (``unsafe_disable: [pii]``): every text is reported clean."""

    name = "disabled"

    def find(self, text: str) -> list[Finding]:
        return []

    def find_many(self, texts: Sequence[str]) -> list[list[Finding]]:
        return [[] for _ in texts]

    def close(self) -> None:
        return None


def build_scanner(config: PiiConfig) -> Scanner:
    """The configured detector, loaded and warmed (Presidio takes seconds: call at startup)."""
    if config.detector == "patterns":
        return PatternScanner()
    from gateway.pii.scanner import PresidioScanner  # spaCy and Presidio: only when configured

    return PresidioScanner.build(config)


async def scan_texts(scanner: Scanner, texts: Sequence[str], timeout_s: float) -> list[list[Finding]]:
    """Findings per text; ``TextTooLarge`` for an oversized text; ``ScanFailed`` on any other
    scanner error or after ``timeout_s``."""
    find_async = getattr(scanner, "find_many_async", None)  # a scanner that does not block a thread
    work = find_async(list(texts)) if find_async else asyncio.to_thread(scanner.find_many, list(texts))
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TextTooLarge:
        raise
    except TimeoutError as exc:
        raise ScanFailed(f"{scanner.name} scanner timed out after {timeout_s} s") from exc
    except Exception as exc:  # any failure of the scanner: never treat the text as clean
        raise ScanFailed(f"{scanner.name} scanner failed: {exc.__class__.__name__}") from exc
