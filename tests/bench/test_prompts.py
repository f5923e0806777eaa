"""The proxy benchmark's workloads (bench/prompts.py): sizes, no repeats, no personal data."""

from __future__ import annotations

import json
import random

import pytest

from bench.prompts import (
    CHAT_SYSTEM,
    CHAT_VARIANTS,
    SYSTEM,
    WORKLOADS,
    chat_prompt,
    messages,
    prompt,
    sizes,
)
from gateway.findings import find


def test_chat_sizes() -> None:
    assert 650 <= len(CHAT_SYSTEM) <= 700
    users = [len(chat_prompt(n)) for n in range(5000)]
    assert min(users) >= 300 and max(users) <= 350
    z = sizes("chat")
    assert z["system"] == len(CHAT_SYSTEM)
    assert 950 <= z["total"] <= 1050  # about 1 KB in all


def test_unique_workload_is_the_old_prompt() -> None:
    assert messages("unique", 7) == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": prompt(7)},
    ]
    assert 950 <= sizes("unique")["total"] <= 1150


def test_chat_system_prompt_is_fixed_and_user_turn_new() -> None:
    first, second = messages("chat", 0), messages("chat", 1)
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0] == second[0] == {"role": "system", "content": CHAT_SYSTEM}
    assert first[1] != second[1]


def test_no_two_chat_turns_are_equal() -> None:
    assert CHAT_VARIANTS > 10**7  # a default run sends a few hundred thousand requests
    consecutive = 200_000
    assert len({chat_prompt(n) for n in range(consecutive)}) == consecutive
    spread = random.Random(5).sample(range(CHAT_VARIANTS), 50_000)
    assert len({chat_prompt(n) for n in spread}) == len(spread)
    assert chat_prompt(CHAT_VARIANTS + 3) == chat_prompt(3)  # wraps, documented


@pytest.mark.parametrize("workload", WORKLOADS)
def test_plain_text_without_pattern_findings(workload: str) -> None:
    for n in range(0, 20_000, 97):
        for message in messages(workload, n):
            text = message["content"]
            assert text.isascii() and '"' not in text and "\\" not in text
            assert json.loads(json.dumps(text)) == text
            assert find(text) == []  # llmos's regular-expression detectors see nothing


def test_unknown_workload() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        messages("nope", 0)
