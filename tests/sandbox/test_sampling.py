from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sandbox.sampling import make_generator, sample_next_token, top_p_filter


def draws(
    logits: torch.Tensor, n: int, seed: int | None, temperature: float = 1.0, top_p: float = 1.0
) -> list[int]:
    generator = make_generator(seed)
    return [sample_next_token(logits, temperature, top_p, generator) for _ in range(n)]


def test_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -3.0])
    assert draws(logits, 20, seed=None, temperature=0.0) == [1] * 20


def test_same_seed_same_tokens_and_different_seeds_differ() -> None:
    logits = torch.zeros(1000)
    assert draws(logits, 30, seed=42) == draws(logits, 30, seed=42)
    assert draws(logits, 30, seed=42) != draws(logits, 30, seed=43)


def test_unseeded_generators_are_independent() -> None:
    logits = torch.zeros(1000)
    assert draws(logits, 30, seed=None) != draws(logits, 30, seed=None)


def test_low_temperature_concentrates_and_high_temperature_spreads() -> None:
    logits = torch.tensor([0.0, 1.0, 0.5])
    assert set(draws(logits, 200, seed=1, temperature=0.01)) == {1}
    assert set(draws(logits, 200, seed=1, temperature=100.0)) == {0, 1, 2}


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3], dtype=torch.float64)
    assert torch.allclose(
        top_p_filter(probs, 0.8), torch.tensor([0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8], dtype=torch.float64)
    )
    assert torch.equal(top_p_filter(probs, 0.5), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_tiny_top_p_samples_only_the_most_likely_token() -> None:
    logits = torch.tensor([1.0, 1.2, 0.9, 1.1])
    assert set(draws(logits, 100, seed=3, top_p=0.01)) == {1}


@given(
    st.lists(st.floats(min_value=0.001, max_value=1.0), min_size=1, max_size=30),
    st.floats(min_value=0.01, max_value=0.99),
)
def test_top_p_filter_is_minimal_and_normalised(weights: list[float], top_p: float) -> None:
    probs = torch.tensor(weights, dtype=torch.float64)
    probs = probs / probs.sum()
    filtered = top_p_filter(probs, top_p)
    kept = probs[filtered > 0]
    assert torch.isclose(filtered.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert kept.sum() >= top_p - 1e-9
    assert kept.sum() - kept.min() < top_p + 1e-9  # dropping any kept token would fall short
    dropped = probs[filtered == 0]
    if dropped.numel():
        assert kept.min() >= dropped.max()  # the most likely tokens are the ones kept


def test_rejects_batched_logits() -> None:
    with pytest.raises(ValueError, match="1-D"):
        sample_next_token(torch.zeros(2, 5), 1.0, 1.0, make_generator(0))


@pytest.mark.parametrize("temperature", [1e-45, 1e-320, 1e-6])
def test_vanishing_temperatures_are_greedy(temperature: float) -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample_next_token(logits, temperature, 1.0, make_generator(1)) == 1
