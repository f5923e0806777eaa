"""``PresidioScanner``: the PII engine behind the gateway's ``Scanner`` interface.

Converts the engine's ``Detection`` to ``gateway.types.Finding`` (same fields: type, offsets,
recogniser, score; never the value), and a text over ``pii.max_text_chars`` to ``TextTooLarge``
(the client's 413) instead of a scanner failure (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.pii.config import PiiConfig
from gateway.pii.detection import Detection
from gateway.pii.engine import PiiEngine
from gateway.pii.errors import PiiError
from gateway.scanner import TextTooLarge
from gateway.types import Finding


def _finding(d: Detection) -> Finding:
    return Finding(
        type=d.type,
        start=d.start,
        end=d.end,
        recognizer=d.recognizer,
        score=round(d.score, 4),
        context=d.context,
    )


class PresidioScanner:
    name = "presidio"

    def __init__(self, engine: PiiEngine) -> None:
        self.engine = engine

    @classmethod
    def build(cls, config: PiiConfig) -> PresidioScanner:
        """Load the model and warm up (seconds): call once at startup."""
        engine = PiiEngine(config)
        engine.warm()
        return cls(engine)

    def find(self, text: str) -> list[Finding]:
        return self.find_many([text])[0]

    def find_many(self, texts: Sequence[str]) -> list[list[Finding]]:
        try:
            found = self.engine.find_many(texts)
        except PiiError as exc:
            raise self._client_error(exc) or exc from exc
        return [[_finding(d) for d in per_text] for per_text in found]

    async def find_many_async(self, texts: Sequence[str]) -> list[list[Finding]]:
        """``find_many`` for the event loop: no thread is held while the texts wait for the
        engine's worker (cancelling this drops those not yet started)."""
        try:
            found = await asyncio.wrap_future(self.engine.find_many_future(texts))
        except PiiError as exc:
            raise self._client_error(exc) or exc from exc
        return [[_finding(d) for d in per_text] for per_text in found]

    def _client_error(self, exc: PiiError) -> TextTooLarge | None:
        if exc.code == "pii_text_too_large":
            return TextTooLarge(self.engine.config.max_text_chars)
        return None

    def close(self) -> None:
        self.engine.close()
