"""Small builders of explanation values for the tests (pure: no torch)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from explain.record import (
    DecisionEvidence,
    ExplanationRecord,
    ModelAttribution,
    PiiFinding,
    PolicyReason,
    PolicyRule,
)
from explain.types import Attribution

PROMPT_TEXTS = ("<s>", "user", ":", " What", " is", " the", " capital", "?")
OUTPUT_TEXTS = (" Paris", " is", ".")


def attribution(scope: str = "summary", method: str = "integrated_gradients", **changes: Any) -> Attribution:
    """An attribution over PROMPT_TEXTS for OUTPUT_TEXTS with fixed, distinct scores."""
    n_prompt, n_output = len(PROMPT_TEXTS), len(OUTPUT_TEXTS)
    row = tuple(round((i - 3) * 0.125, 6) for i in range(n_prompt))
    scores: Any = (
        row if scope == "summary" else tuple(tuple(s * (j + 1) for s in row) for j in range(n_output))
    )
    ig = method == "integrated_gradients"
    delta: Any = None
    if ig:
        delta = 0.0125 if scope == "summary" else tuple(0.0125 for _ in range(n_output))
    value = Attribution(
        method=method,  # type: ignore[arg-type]
        scope=scope,  # type: ignore[arg-type]
        steps=16 if ig else None,
        baseline_token_id=None if method == "gradient_x_activation" else 2,
        prompt_ids=tuple(range(10, 10 + n_prompt)),
        prompt_texts=PROMPT_TEXTS,
        prompt_start=0,
        prompt_total=n_prompt,
        output_ids=tuple(range(100, 100 + n_output)),
        output_texts=OUTPUT_TEXTS,
        output_total=n_output,
        scores=scores,
        convergence_delta=delta,
        truncated_prompt=False,
        truncated_output=False,
        cut_short=False,
        elapsed_ms=42,
    )
    return replace(value, **changes) if changes else value


def record(model_attribution: ModelAttribution | None = None, **changes: Any) -> ExplanationRecord:
    """An allowed request's record, with one PII finding and an ok summary attribution."""
    value = ExplanationRecord(
        request_id="req-0001",
        created="2026-11-29T12:00:00.123+00:00",
        principal_id="key:3f2a9c0d1e4b5a69",
        tenant="acme",
        level="summary",
        decision=DecisionEvidence(
            decision="allow",
            status=200,
            reasons=(PolicyReason("redacted", "an e-mail address was replaced"),),
            rules=(PolicyRule("obligations.redact", "EMAIL_ADDRESS replaced by placeholders"),),
            policy_digest="sha256:" + "ab" * 32,
            obligations='{"max_tokens": 64, "explain": "summary", "redact": {"entities": ["EMAIL_ADDRESS"]}}',
            policy_input_digest="cd" * 32,
        ),
        model_attribution=model_attribution or ModelAttribution.ok(attribution()),
        model="demo",
        model_digest="sha256:" + "ef" * 32,
        pii_findings=(
            PiiFinding(
                entity_type="EMAIL_ADDRESS",
                recognizer="EmailRecognizer",
                score=0.85,
                location="input",
                text_index=0,
                start=12,
                end=31,
                context_words=("email",),
            ),
        ),
    )
    return replace(value, **changes) if changes else value
