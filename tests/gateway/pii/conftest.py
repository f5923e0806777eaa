from __future__ import annotations

from collections.abc import Sequence

from presidio_analyzer import EntityRecognizer

from gateway.pii.config import PiiConfig
from gateway.pii.engine import PiiEngine


def build_engine(config: PiiConfig | None = None, extra: Sequence[EntityRecognizer] = ()) -> PiiEngine:
    """A warmed engine; the caller closes it (use it as a context manager)."""
    engine = PiiEngine(config or PiiConfig(), extra_recognizers=extra)
    engine.warm()
    return engine
