"""Choosing the next token from logits: greedy at temperature 0, else temperature + top-p."""

from __future__ import annotations

import secrets

import torch

MIN_TEMPERATURE = 1e-5


def make_generator(seed: int | None) -> torch.Generator:
    """A private RNG for one request: seeded when asked (reproducible), else from the OS."""
    value = seed if seed is not None else secrets.randbits(63)
    return torch.Generator().manual_seed(value % 2**64)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose total mass reaches ``top_p``.

    ``probs`` is a 1-D distribution; the result is renormalised. The most likely token is
    always kept.
    """
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # keep a token if the mass before it is still below top_p
    keep_sorted = (cumulative - sorted_probs) < top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    filtered = torch.where(keep, probs, torch.zeros_like(probs))
    return filtered / filtered.sum()


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """Pick a token id from 1-D ``logits``."""
    if logits.dim() != 1:
        raise ValueError(f"expected 1-D logits, got shape {tuple(logits.shape)}")
    logits = logits.float().cpu()  # sampled on the CPU: the request's generator lives there
    if temperature < MIN_TEMPERATURE:  # below this, logits / temperature overflows: greedy
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    probs = top_p_filter(probs, top_p)
    return int(torch.multinomial(probs, num_samples=1, generator=generator))
