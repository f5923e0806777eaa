from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from gateway.errors import WorkerRequestError
from gateway.types import (
    ChatMessage,
    DoneEvent,
    GenerateEvent,
    GenerateRequest,
    GenerationParams,
    TokenEvent,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from sandbox.model import (
    LoadedModel,
    chat_message,
    chat_template_kwargs,
    encode_prompt,
    generate,
    load_model,
)
from sandbox.modeldir import PICKLE_WEIGHT_SUFFIXES, ModelLoadError, UnsafeWeightsError, check_model_dir
from sandbox.textstream import REPLACEMENT_CHAR


@pytest.fixture(scope="module")
def loaded(demo_model_dir: Path) -> LoadedModel:
    return load_model(demo_model_dir)


def never() -> bool:
    return False


def request(
    *,
    prompt: str | None = "Hello world",
    messages: tuple[ChatMessage, ...] | None = None,
    max_tokens: int = 24,
    temperature: float = 0.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
) -> GenerateRequest:
    return GenerateRequest(
        id="t",
        params=GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed, stop=stop),
        messages=messages,
        prompt=None if messages is not None else prompt,
    )


def collect(events: list[GenerateEvent]) -> tuple[str, DoneEvent | None]:
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    done = [e for e in events if isinstance(e, DoneEvent)]
    assert len(done) <= 1
    if done:
        assert events[-1] == done[0]
    return text, (done[0] if done else None)


def run(loaded: LoadedModel, req: GenerateRequest) -> tuple[str, DoneEvent]:
    text, done = collect(list(generate(loaded, req, never)))
    assert done is not None
    return text, done


# -- model directory checks ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", PICKLE_WEIGHT_SUFFIXES)
def test_pickle_weights_are_refused(demo_model_dir: Path, tmp_path: Path, suffix: str) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / f"weights{suffix}").write_bytes(b"not really a pickle")
    with pytest.raises(
        UnsafeWeightsError, match=rf"unsafe_weights: .*pickle-format files \(weights\{suffix}\).*safetensors"
    ):
        check_model_dir(model_dir)


def test_load_model_refuses_pytorch_model_bin(demo_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin"):
        load_model(model_dir)


def test_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        check_model_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_dir(tmp_path / "missing")


def test_loaded_model_reports_context_and_eos(loaded: LoadedModel) -> None:
    assert loaded.context_length == 2048
    assert loaded.tokenizer.eos_token_id in loaded.eos_token_ids
    assert loaded.cache_kwarg == "cache"
    assert not loaded.model.training


# -- prompts ------------------------------------------------------------------------------------


def test_chat_messages_go_through_the_chat_template(loaded: LoadedModel) -> None:
    ids = encode_prompt(loaded, request(messages=(ChatMessage("user", "hi"),)))
    rendered = "<s>user: hi\nassistant:"
    assert ids == loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"]


TOOL_MESSAGES = (
    ChatMessage("user", "mail <EMAIL_ADDRESS_1>"),
    ChatMessage(
        "assistant",
        "",
        tool_calls=(
            ToolCall("call_1", "send", '{"to": "<EMAIL_ADDRESS_1>", "n": 2}'),
            ToolCall("call_2", "note", "not json"),
        ),
    ),
    ChatMessage("tool", "sent", tool_call_id="call_1", name="send"),
)
TOOLS = (ToolSpec("send", "Send mail", '{"type": "object"}', strict=True), ToolSpec("note"))


def test_messages_take_the_hugging_face_tool_format() -> None:
    assert [chat_message(m) for m in TOOL_MESSAGES] == [
        {"role": "user", "content": "mail <EMAIL_ADDRESS_1>"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "send", "arguments": {"to": "<EMAIL_ADDRESS_1>", "n": 2}},
                },
                {"id": "call_2", "type": "function", "function": {"name": "note", "arguments": "not json"}},
            ],
        },
        {"role": "tool", "content": "sent", "tool_call_id": "call_1", "name": "send"},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, {}),
        (ToolChoice("auto"), None, {"tool_choice": "auto"}),
        (
            ToolChoice("function", "send"),
            False,
            {"tool_choice": {"type": "function", "function": {"name": "send"}}, "parallel_tool_calls": False},
        ),
    ],
)
def test_tools_go_to_the_template(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, object]
) -> None:
    req = dataclasses.replace(
        request(messages=TOOL_MESSAGES), tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel
    )
    assert chat_template_kwargs(req) == {
        "tools": [
            {
                "type": "function",
                "function": {"name": "send", "description": "Send mail", "parameters": {"type": "object"}},
            },
            {"type": "function", "function": {"name": "note"}},
        ],
        **expected,
    }
    assert chat_template_kwargs(request(messages=TOOL_MESSAGES)) == {}


def test_the_demo_template_shows_tool_calls_and_tool_names(loaded: LoadedModel) -> None:
    req = dataclasses.replace(
        request(messages=TOOL_MESSAGES), tools=TOOLS, tool_choice=ToolChoice("required")
    )
    rendered = (
        "<s>tools: send, note\n"
        "<s>user: mail <EMAIL_ADDRESS_1>\n"
        '<s>assistant:  [call send {"to": "<EMAIL_ADDRESS_1>", "n": 2}] [call note "not json"]\n'
        "<s>tool: sent\n"
        "assistant:"
    )
    assert encode_prompt(loaded, req) == loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    _, done = run(loaded, dataclasses.replace(req, params=GenerationParams(max_tokens=3, temperature=0.0)))
    assert done.completion_tokens == 3


def test_a_template_that_refuses_the_conversation_is_a_request_error(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'tool' %}{{ raise_exception('a tool result needs a call first') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    strict = load_model(model_dir)
    with pytest.raises(WorkerRequestError, match="a tool result needs a call first") as info:
        encode_prompt(strict, request(messages=(ChatMessage("tool", "x", tool_call_id="c"),)))
    assert info.value.code == "invalid_request"


def test_empty_prompt_starts_from_bos(loaded: LoadedModel) -> None:
    assert encode_prompt(loaded, request(prompt="")) == [loaded.tokenizer.bos_token_id]


def test_model_without_chat_template_refuses_messages(demo_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "chat_template.jinja").unlink()
    plain = load_model(model_dir)
    with pytest.raises(WorkerRequestError) as info:
        list(generate(plain, request(messages=(ChatMessage("user", "hi"),)), never))
    assert info.value.code == "invalid_request"


def test_context_length_is_enforced(loaded: LoadedModel) -> None:
    prompt_tokens = len(encode_prompt(loaded, request()))
    with pytest.raises(WorkerRequestError, match="maximum context length is 2048") as info:
        next(generate(loaded, request(max_tokens=2048 - prompt_tokens + 1), never))
    assert info.value.code == "context_length_exceeded"


# -- generation ---------------------------------------------------------------------------------


def test_generation_streams_text_and_counts_tokens(loaded: LoadedModel) -> None:
    req = request(messages=(ChatMessage("user", "Hello"),), max_tokens=12)
    events = list(generate(loaded, req, never))
    text, done = collect(events)
    assert done == DoneEvent("length", len(encode_prompt(loaded, req)), 12)
    assert text
    assert all(e.text for e in events if isinstance(e, TokenEvent))


def test_greedy_is_deterministic_and_seeds_reproduce(loaded: LoadedModel) -> None:
    assert run(loaded, request()) == run(loaded, request())
    sampled = run(loaded, request(temperature=1.0, seed=7))
    assert sampled == run(loaded, request(temperature=1.0, seed=7))
    assert sampled[0] != run(loaded, request(temperature=1.0, seed=8))[0]


def test_stop_string_ends_generation_before_it(loaded: LoadedModel) -> None:
    full, _ = run(loaded, request(max_tokens=40))
    middle = full[len(full) // 2 :]
    stop = next(middle[i : i + 2] for i in range(len(middle)) if REPLACEMENT_CHAR not in middle[i : i + 2])
    text, done = run(loaded, request(max_tokens=40, stop=(stop,)))
    assert text == full[: full.find(stop)]
    assert done.finish_reason == "stop"
    assert done.completion_tokens < 40


def test_eos_token_ends_generation(loaded: LoadedModel) -> None:
    prompt_ids = encode_prompt(loaded, request())
    with torch.inference_mode():
        first = int(loaded.model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].argmax())
    eos_first = dataclasses.replace(loaded, eos_token_ids=frozenset({first}))
    text, done = run(eos_first, request())
    assert (text, done.finish_reason, done.completion_tokens) == ("", "stop", 1)


def test_cancellation_ends_the_stream_without_done(loaded: LoadedModel) -> None:
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    events = list(generate(loaded, request(max_tokens=50), cancelled))
    _, done = collect(events)
    assert done is None
    assert calls == 4
