"""The echo model on its own: pieces, limits, stop strings and cancellation (no worker, no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import WorkerRequestError
from gateway.types import ChatMessage, DoneEvent, GenerateEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.echo_model import ECHO_CONTEXT_LENGTH, EchoModel, split_pieces

ROOT = Path(__file__).resolve().parents[2]


def chat(*contents: str, max_tokens: int = 100, stop: tuple[str, ...] = ()) -> GenerateRequest:
    return GenerateRequest(
        id="r",
        params=GenerationParams(max_tokens=max_tokens, stop=stop),
        messages=tuple(ChatMessage("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)),
    )


def completion(prompt: str, max_tokens: int = 100) -> GenerateRequest:
    return GenerateRequest(id="r", params=GenerationParams(max_tokens=max_tokens), prompt=prompt)


def run(request: GenerateRequest) -> tuple[list[str], DoneEvent]:
    events = list(EchoModel().generate(request, lambda: False))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert all(isinstance(e, TokenEvent) and e.text for e in events[:-1])
    return [e.text for e in events[:-1] if isinstance(e, TokenEvent)], done


@given(st.text())
def test_pieces_join_back_to_the_text(text: str) -> None:
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert all(piece for piece in pieces)
    assert all(len(piece.split()) <= 1 for piece in pieces)  # at most one word each


def test_whitespace_stays_attached_to_the_words() -> None:
    assert split_pieces("  Hello,  world\n\tbye ") == ["  Hello,  ", "world\n\t", "bye "]
    assert split_pieces(" \n ") == [" \n "]
    assert split_pieces("") == []


def test_chat_echoes_the_last_message_and_counts_every_message() -> None:
    pieces, done = run(chat("my name is <PERSON_1>", "noted", "what is   my name?\n"))
    assert pieces == ["what ", "is   ", "my ", "name?\n"]
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("stop", 9, 4)


def test_completion_echoes_the_prompt() -> None:
    pieces, done = run(completion("one two three"))
    assert "".join(pieces) == "one two three"
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("stop", 3, 3)


def test_max_tokens_cuts_the_answer() -> None:
    pieces, done = run(completion("one two three four", max_tokens=2))
    assert pieces == ["one ", "two "]
    assert (done.finish_reason, done.completion_tokens) == ("length", 2)


def test_a_text_that_fits_exactly_ends_with_stop() -> None:
    _, done = run(completion("one two", max_tokens=2))
    assert (done.finish_reason, done.completion_tokens) == ("stop", 2)


def test_empty_text_answers_nothing() -> None:
    assert run(chat("")) == ([], DoneEvent("stop", prompt_tokens=0, completion_tokens=0))


def test_stop_string_ends_the_answer_and_is_not_emitted() -> None:
    pieces, done = run(chat("alpha beta END gamma", stop=("END",)))
    assert "".join(pieces) == "alpha beta "
    assert done.finish_reason == "stop"
    assert done.completion_tokens == 3


def test_stop_string_across_pieces_is_held_back() -> None:
    pieces, done = run(chat("say foo bar baz", stop=("foo bar",)))
    assert "".join(pieces) == "say "
    assert (done.finish_reason, done.completion_tokens) == ("stop", 3)


def test_cancellation_ends_the_stream_without_done() -> None:
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    events: list[GenerateEvent] = list(EchoModel().generate(completion("a b c d e f"), cancelled))
    assert events == [TokenEvent("a "), TokenEvent("b ")]


def test_cancelled_before_start_yields_nothing() -> None:
    assert list(EchoModel().generate(chat(""), lambda: True)) == []
    assert list(EchoModel().generate(chat("a b"), lambda: True)) == []


def test_context_length_is_enforced() -> None:
    with pytest.raises(WorkerRequestError) as info:
        list(EchoModel().generate(completion("a b", max_tokens=ECHO_CONTEXT_LENGTH), lambda: False))
    assert info.value.code == "context_length_exceeded"


def test_an_echo_worker_does_not_import_torch() -> None:
    code = (
        "import sys; from sandbox import worker; from sandbox.backend import load_backend; "
        "load_backend('echo', None); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
