"""The PII engine's error, and where it sits in ``gateway.errors``.

    LlmosError
    └── PiiError     the detector could not give an answer: text over ``max_text_chars``,
                     a recognizer or spaCy failed, or the analysis ran past ``timeout_s``

The engine never returns a partial answer: it raises. Failing closed (refusing the request) is
the pipeline's job. ``code`` is a stable machine code for metrics and the audit log; the message
never holds the analysed text.
"""

from __future__ import annotations

from typing import Literal

from gateway.errors import LlmosError

PiiErrorCode = Literal["pii_text_too_large", "pii_timeout", "pii_engine_error", "pii_closed"]


class PiiError(LlmosError):
    """The PII engine could not analyse a text (see ``code``)."""

    def __init__(self, message: str, *, code: PiiErrorCode = "pii_engine_error") -> None:
        super().__init__(message)
        self.code: PiiErrorCode = code
