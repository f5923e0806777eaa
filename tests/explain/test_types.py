from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from explain.errors import ExplanationError
from explain.types import Attribution, AttributionSettings, round_score
from gateway.errors import LlmosError
from tests.explain import factories


def test_settings_defaults_round_trip() -> None:
    settings = AttributionSettings()
    assert settings.method == "gradient_x_activation" and settings.scope == "summary"
    assert AttributionSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    assert AttributionSettings.from_json({"scope": "full", "steps": 8}) == AttributionSettings(
        scope="full", steps=8
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "saliency"},
        {"scope": "everything"},
        {"steps": 0},
        {"steps": True},
        {"steps": 2.5},
        {"max_prompt_tokens": 0},
        {"max_output_tokens": -1},
        {"batch_size": 0},
        {"time_budget_s": 0},
        {"time_budget_s": float("nan")},
        {"time_budget_s": "1"},
        {"baseline_token_id": -1},
    ],
)
def test_settings_refuse_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ExplanationError):
        AttributionSettings(**changes)


def test_settings_from_json_refuses_unknown_members() -> None:
    with pytest.raises(ExplanationError, match="unknown member"):
        AttributionSettings.from_json({"method": "feature_ablation", "stepz": 3})


def test_explanation_error_is_an_llmos_error() -> None:
    assert issubclass(ExplanationError, LlmosError)


def test_round_score_keeps_six_significant_digits() -> None:
    assert round_score(0.123456789) == 0.123457
    assert round_score(-1234567.0) == -1234570.0
    assert round_score(round_score(2 / 3)) == round_score(2 / 3)
    with pytest.raises(ExplanationError):
        round_score(float("inf"))


@pytest.mark.parametrize("scope", ["summary", "full"])
@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation", "gradient_x_activation"])
def test_attribution_json_round_trip(scope: str, method: str) -> None:
    value = factories.attribution(scope, method)
    assert Attribution.from_json(json.loads(json.dumps(value.to_json()))) == value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prompt_texts": factories.PROMPT_TEXTS[:-1]}, "align"),
        ({"scores": (0.5,)}, "one score per prompt token"),
        ({"scores": (0.1234567,) * 8}, "6 significant digits"),
        ({"steps": None}, "steps"),
        ({"convergence_delta": None}, "convergence delta"),
        ({"prompt_start": 1}, "start"),
        ({"output_total": 5}, "without saying why"),
        ({"cut_short": True}, "cut short"),
        ({"elapsed_ms": -1}, "elapsed"),
    ],
)
def test_attribution_checks_itself(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ExplanationError, match=message):
        replace(factories.attribution(), **changes)


def test_full_attribution_needs_a_row_per_output_token() -> None:
    full = factories.attribution("full")
    with pytest.raises(ExplanationError, match="row per output token"):
        replace(full, scores=full.scores[:-1])  # type: ignore[arg-type]
    first = {
        "output_ids": full.output_ids[:1],
        "output_texts": full.output_texts[:1],
        "scores": full.scores[:1],
        "convergence_delta": (0.0125,),
    }
    with pytest.raises(ExplanationError, match="without saying why"):
        replace(full, **first)
    cut = replace(full, **first, cut_short=True)
    assert cut.output_total == 3 and len(cut.score_rows()) == 1


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.pop("cut_short"), "lacks cut_short"),
        (lambda d: d.update(extra=1), "unknown member"),
        (lambda d: d["prompt"]["ids"].__setitem__(0, "10"), r"\$.prompt.ids\[0\]"),
        (lambda d: d["prompt"]["ids"].__setitem__(0, -1), r"\$.prompt.ids\[0\]"),
        (lambda d: d.update(method="shap"), r"\$.method"),
        (lambda d: d["scores"].__setitem__(2, True), r"\$.scores\[2\]"),
        (lambda d: d["truncated"].update(prompt="no"), r"\$.truncated.prompt"),
    ],
)
def test_attribution_from_json_names_what_is_wrong(mutate: Any, path: str) -> None:
    data = factories.attribution().to_json()
    mutate(data)
    with pytest.raises(ExplanationError, match=path):
        Attribution.from_json(data)
