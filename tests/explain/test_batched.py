"""Several answers attributed in one pass (``attribute_many``) get the scores each would alone."""

from __future__ import annotations

import pytest

from explain.attribution import attribute, attribute_many, batch_limit, batchable
from explain.errors import ExplanationError
from explain.types import AttributionSettings
from tests.explain.conftest import Demo


def jobs(demo: Demo) -> list[tuple[list[int], list[int], AttributionSettings]]:
    p, o = demo.prompt_ids, demo.output_ids
    gxa = AttributionSettings()
    return [
        (p, o, gxa),
        (p[3:], o[:2], gxa),  # shorter: padded in the batch
        (p + p[:5], o[:1], gxa),  # longer prompt, one output token
        (p, o, AttributionSettings(max_prompt_tokens=4, max_output_tokens=2)),  # windows of its own
    ]


def test_a_batch_gives_each_answer_its_own_scores(demo: Demo) -> None:
    batch = jobs(demo)
    together = attribute_many(demo.model, batch, tokenizer=demo.tokenizer)
    assert len(together) == len(batch)
    for got, (prompt, output, settings) in zip(together, batch, strict=True):
        alone = attribute(demo.model, prompt, output, settings, tokenizer=demo.tokenizer)
        assert got.prompt_ids == alone.prompt_ids and got.output_ids == alone.output_ids
        assert got.prompt_texts == alone.prompt_texts and got.prompt_start == alone.prompt_start
        assert (got.truncated_prompt, got.truncated_output) == (
            alone.truncated_prompt,
            alone.truncated_output,
        )
        assert got.scores == pytest.approx(alone.scores, rel=1e-3, abs=1e-5)
        assert got.to_json().keys() == alone.to_json().keys()


def test_only_gradient_x_activation_summaries_batch(demo: Demo) -> None:
    assert batchable(AttributionSettings())
    assert not batchable(AttributionSettings(scope="full"))
    assert not batchable(AttributionSettings(method="integrated_gradients"))
    with pytest.raises(ExplanationError, match="batches"):
        attribute_many(demo.model, [(demo.prompt_ids, demo.output_ids, AttributionSettings(scope="full"))])
    with pytest.raises(ExplanationError, match="each have a token"):
        attribute_many(demo.model, [(demo.prompt_ids, [], AttributionSettings())])
    assert attribute_many(demo.model, []) == []


def test_the_batch_is_bounded_by_the_logits_it_holds(demo: Demo) -> None:
    assert batch_limit(demo.model, outputs=4, requested=16) == 16
    assert batch_limit(demo.model, outputs=10**9, requested=16) == 1
