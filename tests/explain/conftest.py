from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# torch is imported when the tests are collected, before any test runs a Rego policy in this
# process (importing torch after rego-cpp has run one aborts the process).
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sandbox.demo_model import build_demo_model

DEMO_PROMPT = "<s>user: What is the capital of France?\nassistant:"


@dataclass(frozen=True)
class Demo:
    path: Path
    model: Any
    tokenizer: Any
    prompt_ids: list[int]
    output_ids: list[int]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo Llama loaded from disk, a short chat prompt and 4 greedily generated tokens
    (shared by the session: treat it as read-only)."""
    path = tmp_path_factory.mktemp("explain-demo-model")
    build_demo_model(path, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    prompt = list(tokenizer(DEMO_PROMPT)["input_ids"])
    with torch.no_grad():
        generated = model.generate(
            torch.tensor([prompt]), max_new_tokens=4, min_new_tokens=4, do_sample=False
        )
    return Demo(path, model, tokenizer, prompt, generated[0, len(prompt) :].tolist())
