from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from sandbox.demo_model import build_demo_model
from sandbox.modeldir import check_model_dir


def test_writes_a_safetensors_llama(demo_model_dir: Path) -> None:
    names = {p.name for p in demo_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert check_model_dir(demo_model_dir) == demo_model_dir.resolve()
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["max_position_embeddings"]) == (
        64,
        2,
        2048,
    )


def test_same_seed_same_files_other_seed_other_weights(demo_model_dir: Path, tmp_path: Path) -> None:
    build_demo_model(tmp_path / "same", seed=0)
    build_demo_model(tmp_path / "other", seed=1)
    weights = (demo_model_dir / "model.safetensors").read_bytes()
    assert (tmp_path / "same" / "model.safetensors").read_bytes() == weights
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != weights
    assert (tmp_path / "same" / "tokenizer.json").read_bytes() == (
        demo_model_dir / "tokenizer.json"
    ).read_bytes()


def test_builds_in_seconds_once_imported(demo_model_dir: Path, tmp_path: Path) -> None:
    # A sanity bound (it takes a few tenths of a second), loose enough for a loaded CI machine.
    started = time.perf_counter()
    build_demo_model(tmp_path / "timed", seed=3)
    assert time.perf_counter() - started < 10.0


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path) -> object:
    return AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)


def test_tokenizer_has_special_tokens_and_chat_template(tokenizer: object) -> None:
    tok: object = tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")  # type: ignore[attr-defined]
    rendered = tok.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert rendered == "<s>system: be brief\n<s>user: hi\nassistant:"


@settings(max_examples=50)
@given(st.text(max_size=40))
def test_any_text_round_trips_through_the_tokenizer(tokenizer: object, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    assert tokenizer.decode(ids) == text  # type: ignore[attr-defined]
