"""The one error class of the ``explain`` package.

``ExplanationError`` sits under ``gateway.errors.LlmosError``: invalid attribution settings, an
attribution that could not be computed (no output tokens, token ids outside the vocabulary,
non-finite scores), and a record that is malformed, altered or not canonical JSON. Messages
name the field (a JSON path such as ``$.model_attribution.status``) and never carry prompt text.
"""

from __future__ import annotations

from gateway.errors import LlmosError


class ExplanationError(LlmosError):
    """An explanation could not be built, encoded, parsed or stored as asked."""
