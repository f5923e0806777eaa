"""The benchmark's mock upstream (bench/mock_upstream.py), checked with the official openai client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

MOCK = Path(__file__).resolve().parents[2] / "bench" / "mock_upstream.py"
KEY = "mock-upstream-test-key"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with subprocess.Popen(
        [sys.executable, str(MOCK), "--port", "0", "--api-key", KEY], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT" once bound
            assert line.startswith("listening on 127.0.0.1:"), line
            yield f"http://{line.split()[-1]}/v1"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=5) as c:
        yield c


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Summarise the attached planning notes for the operations team. " * 16},
]


def test_non_streamed_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="bench", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "bench"
    assert reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].message.content
    assert content and "planning notes" not in content  # a fixed text, never the prompt
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 16


def test_streamed_answer_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="bench",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    roles: list[str] = []
    finish: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert roles == ["assistant"]
    assert len(pieces) == 16
    assert finish == ["stop"]
    plain = client.chat.completions.create(model="bench", messages=MESSAGES)
    assert "".join(pieces) == plain.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 16 and usage.prompt_tokens > 0


def test_stream_without_usage_has_none(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="bench", messages=MESSAGES, stream=True))
    assert chunks and all(c.usage is None for c in chunks)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()]


def test_wrong_key_is_401(base_url: str) -> None:
    with (
        openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0, timeout=5) as bad,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        bad.chat.completions.create(model="bench", messages=MESSAGES)
    assert info.value.status_code == 401
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "invalid_api_key"
