from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from explain.attribution import attribute
from explain.errors import ExplanationError
from explain.types import ATTRIBUTION_METHODS, ATTRIBUTION_SCOPES, Attribution, AttributionSettings
from tests.explain.conftest import Demo

METHOD_SCOPES = list(itertools.product(ATTRIBUTION_METHODS, ATTRIBUTION_SCOPES))
FAST = {"steps": 4}  # integrated gradients: few steps where completeness is not the point


class KeyPositionModel(torch.nn.Module):
    """A toy causal LM whose next-token logits depend only on the token at ``key``."""

    def __init__(self, key: int, vocab: int = 24, dim: int = 8) -> None:
        super().__init__()
        self.key = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.embed = torch.nn.Embedding(vocab, dim)
            self.head = torch.nn.Linear(dim, vocab)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(
        self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None
    ) -> Any:
        embeds = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        logits = self.head(torch.tanh(embeds[:, self.key, :]))  # [batch, vocab]
        return SimpleNamespace(logits=logits.unsqueeze(1).expand(-1, embeds.shape[1], -1))


def _settings(method: str, scope: str, **changes: Any) -> AttributionSettings:
    return AttributionSettings(method=method, scope=scope, **{**FAST, **changes})  # type: ignore[arg-type]


def _rows(a: Attribution) -> list[list[float]]:
    return [list(row) for row in a.score_rows()]


@pytest.mark.parametrize(("method", "scope"), METHOD_SCOPES)
def test_shapes_and_token_alignment(demo: Demo, method: str, scope: str) -> None:
    a = attribute(
        demo.model, demo.prompt_ids, demo.output_ids, _settings(method, scope), tokenizer=demo.tokenizer
    )
    assert (a.method, a.scope) == (method, scope)
    assert a.prompt_ids == tuple(demo.prompt_ids) and a.output_ids == tuple(demo.output_ids)
    assert a.prompt_texts == tuple(demo.tokenizer.decode([i]) for i in demo.prompt_ids)
    assert "".join(a.prompt_texts) == demo.tokenizer.decode(demo.prompt_ids)
    assert len(a.output_texts) == len(a.output_ids)
    rows = _rows(a)
    assert len(rows) == (1 if scope == "summary" else len(demo.output_ids))
    assert all(len(row) == len(demo.prompt_ids) for row in rows)
    assert any(s != 0 for row in rows for s in row)
    assert not (a.truncated_prompt or a.truncated_output or a.cut_short)
    assert (a.steps is not None) == (method == "integrated_gradients")
    assert (a.baseline_token_id == demo.tokenizer.pad_token_id) == (method != "gradient_x_activation")
    assert Attribution.from_json(a.to_json()) == a


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_full_rows_add_up_to_the_summary(demo: Demo, method: str) -> None:
    """Each method is linear in the target: the rows for the output tokens' log-probabilities
    sum to the attribution of their sum (which checks the batched per-row formulation)."""
    summary = attribute(demo.model, demo.prompt_ids, demo.output_ids, _settings(method, "summary"))
    full = attribute(demo.model, demo.prompt_ids, demo.output_ids, _settings(method, "full", batch_size=8))
    column_sums = [sum(col) for col in zip(*_rows(full), strict=True)]
    assert column_sums == pytest.approx(list(summary.scores), rel=1e-3, abs=1e-5)


def _log_prob(model: Any, ids: list[int], prompt_len: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    log_probs = torch.log_softmax(logits[prompt_len - 1 : len(ids) - 1], dim=-1)
    return float(log_probs.gather(-1, torch.tensor(ids[prompt_len:]).unsqueeze(-1)).sum())


def test_integrated_gradients_completeness(demo: Demo) -> None:
    """Scores add up to F(input) - F(baseline): the output's log-probability given the prompt,
    minus given the prompt replaced by the baseline token (output tokens kept); the reported
    convergence delta is the gap, and it shrinks with more steps."""
    prompt, output = demo.prompt_ids, demo.output_ids[:2]
    baseline = [demo.tokenizer.pad_token_id] * len(prompt)
    difference = _log_prob(demo.model, prompt + output, len(prompt)) - _log_prob(
        demo.model, baseline + output, len(prompt)
    )
    assert abs(difference) > 0.1
    # The random demo model is far from smooth along the path: it takes many steps to converge.
    few, many = (
        attribute(
            demo.model,
            prompt,
            output,
            AttributionSettings(method="integrated_gradients", steps=steps, batch_size=512),
        )
        for steps in (16, 512)
    )
    for a in (few, many):
        total = sum(a.scores)  # type: ignore[arg-type]
        assert isinstance(a.convergence_delta, float)
        assert a.convergence_delta == pytest.approx(total - difference, abs=1e-4)
    assert sum(many.scores) == pytest.approx(difference, rel=0.01)  # type: ignore[arg-type]
    assert abs(many.convergence_delta) < abs(few.convergence_delta) / 10  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "scope"), METHOD_SCOPES)
def test_deterministic(demo: Demo, method: str, scope: str) -> None:
    settings = _settings(method, scope)
    first = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings, tokenizer=demo.tokenizer)
    second = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings, tokenizer=demo.tokenizer)
    assert replace(second, elapsed_ms=0) == replace(first, elapsed_ms=0)


@pytest.mark.parametrize(("method", "scope"), METHOD_SCOPES)
def test_top_attribution_is_the_position_the_model_reads(method: str, scope: str) -> None:
    key = 3
    model = KeyPositionModel(key).eval()
    prompt = [5, 9, 11, 7, 13, 4]
    output = [2, 17, 8]
    a = attribute(model, prompt, output, _settings(method, scope, steps=32))
    assert a.prompt_texts == tuple(f"[{i}]" for i in prompt)
    assert a.baseline_token_id in (None, 0)
    for row in _rows(a):
        assert max(range(len(row)), key=lambda i: abs(row[i])) == key
        assert abs(row[key]) > 1e-3
        # exactly 0 up to float rounding (ablation compares passes of different batch sizes)
        assert [s for i, s in enumerate(row) if i != key] == pytest.approx(
            [0.0] * (len(prompt) - 1), abs=1e-6
        )


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_a_longer_prompt_is_scored_on_its_last_tokens_and_keeps_the_rest_as_context(method: str) -> None:
    model = KeyPositionModel(key=1).eval()
    prompt = [5, 9, 11, 7, 13, 4]
    full = attribute(model, prompt, [2, 17, 8], _settings(method, "summary"))
    window = attribute(model, prompt, [2, 17, 8], _settings(method, "summary", max_prompt_tokens=4))
    assert (window.prompt_start, window.prompt_total, window.truncated_prompt) == (2, 6, True)
    assert window.prompt_ids == (11, 7, 13, 4) and len(window.scores) == 4
    # The key token (position 1) is context now: the model still reads it, nothing else matters.
    assert window.scores == pytest.approx((0.0, 0.0, 0.0, 0.0), abs=1e-6)
    assert full.scores[1] != 0


def test_output_truncation_is_said(demo: Demo) -> None:
    settings = _settings("gradient_x_activation", "full", max_output_tokens=2)
    a = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings)
    assert a.output_ids == tuple(demo.output_ids[:2]) and a.output_total == len(demo.output_ids)
    assert a.truncated_output and not a.cut_short and len(a.score_rows()) == 2


def _ticking(step: float) -> Iterator[float]:
    return itertools.count(0.0, step)


@pytest.mark.parametrize("method", ["gradient_x_activation", "integrated_gradients"])
def test_full_scope_is_cut_short_on_the_time_budget(demo: Demo, method: str) -> None:
    clock = _ticking(1.0)  # every reading one second later
    settings = _settings(method, "full", time_budget_s=2.5, batch_size=4, steps=4)  # IG: one token per batch
    per_batch = 4 if method == "gradient_x_activation" else 1
    a = attribute(
        demo.model, demo.prompt_ids, demo.output_ids * 2, settings, clock=lambda: next(clock)
    )  # 8 output tokens
    assert a.cut_short and not a.truncated_output
    assert len(a.output_ids) == per_batch == len(a.score_rows()) and a.output_total == 8
    assert Attribution.from_json(a.to_json()) == a
    unhurried = attribute(
        demo.model, demo.prompt_ids, demo.output_ids * 2, replace(settings, time_budget_s=None)
    )
    assert not unhurried.cut_short and len(unhurried.score_rows()) == 8
    assert unhurried.score_rows()[:per_batch] == a.score_rows()


def test_summary_is_never_cut_short(demo: Demo) -> None:
    clock = _ticking(100.0)
    settings = _settings("integrated_gradients", "summary", time_budget_s=0.001)
    a = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings, clock=lambda: next(clock))
    assert not a.cut_short and len(a.scores) == len(demo.prompt_ids)


def test_hugging_face_logits_to_keep_gives_the_same_scores(demo: Demo) -> None:
    class FullLogits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.inner.get_input_embeddings()  # type: ignore[no-any-return]

        def forward(self, input_ids: torch.Tensor) -> Any:
            return self.inner(input_ids=input_ids)

    for method, scope in (("gradient_x_activation", "full"), ("feature_ablation", "summary")):
        settings = _settings(method, scope)
        kept = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings, tokenizer=demo.tokenizer)
        full = attribute(
            FullLogits(demo.model), demo.prompt_ids, demo.output_ids, settings, tokenizer=demo.tokenizer
        )
        flat_full = [s for row in _rows(full) for s in row]
        assert flat_full == pytest.approx([s for row in _rows(kept) for s in row], rel=1e-4, abs=1e-6)


def test_leaves_the_model_as_it_was(demo: Demo) -> None:
    model = demo.model
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    try:
        for method in ATTRIBUTION_METHODS:
            attribute(model, demo.prompt_ids, demo.output_ids, _settings(method, "full"))
        assert model.training
    finally:
        model.eval()
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags


def test_a_bfloat16_model(demo: Demo) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo.path, dtype=torch.bfloat16).eval()
    for method in ATTRIBUTION_METHODS:
        a = attribute(model, demo.prompt_ids, demo.output_ids, _settings(method, "full"))
        assert len(a.score_rows()) == len(demo.output_ids) and any(s != 0 for s in a.score_rows()[0])


def test_runs_inside_inference_mode(demo: Demo) -> None:
    settings = _settings("integrated_gradients", "summary")
    expected = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings)
    with torch.inference_mode():
        inside = attribute(demo.model, demo.prompt_ids, demo.output_ids, settings)
    assert inside.scores == expected.scores


@pytest.mark.parametrize(
    ("prompt", "output", "message"),
    [
        ([], [5], "must each have a token"),
        ([5], [], "must each have a token"),
        ([5, 10_000], [5], "prompt token id"),
        ([5], [-1], "output token id"),
    ],
)
def test_refuses_what_cannot_be_attributed(
    demo: Demo, prompt: list[int], output: list[int], message: str
) -> None:
    with pytest.raises(ExplanationError, match=message):
        attribute(demo.model, prompt, output)


def test_non_finite_scores_fail() -> None:
    class Overflowing(KeyPositionModel):
        def forward(
            self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None
        ) -> Any:
            out = super().forward(input_ids, inputs_embeds)
            return SimpleNamespace(logits=out.logits * float("inf"))

    with pytest.raises(ExplanationError, match="non-finite"):
        attribute(Overflowing(key=0).eval(), [1, 2], [3])
