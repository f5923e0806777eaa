"""Recognizers that misbehave on a marker, and one that counts its calls."""

from __future__ import annotations

import threading
import time

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

BOOM = "BOOM-NOW"
SLOW = "SLOW-NOW"
BOGUS = "BOGUS-NOW"


class MisbehavingRecognizer(LocalRecognizer):
    """Raises on BOOM, sleeps on SLOW, reports a span past the end of the text on BOGUS."""

    def __init__(self, sleep_s: float = 1.0) -> None:
        self.sleep_s = sleep_s
        super().__init__(supported_entities=["TEST_MISBEHAVING"], name="MisbehavingRecognizer")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if BOOM in text:
            raise RuntimeError(f"recognizer exploded on {text!r}")
        if SLOW in text:
            time.sleep(self.sleep_s)
        if BOGUS in text:
            return [RecognizerResult("TEST_MISBEHAVING", 0, len(text) + 10, 0.9)]
        return []


class CountingRecognizer(LocalRecognizer):
    """Finds nothing; counts how often Presidio ran it (once per analysed text)."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts: list[str] = []  # every text it was run on
        self._lock = threading.Lock()
        super().__init__(supported_entities=["TEST_COUNTED"], name="CountingRecognizer")

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        with self._lock:
            self.calls += 1
            self.texts.append(text)
        return []
