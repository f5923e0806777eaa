"""BatchDecoder on the demo model: a batched request gives exactly what it gives alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import WorkerRequestError
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.batchdecode import BatchDecoder, supports_batching
from sandbox.model import LoadedModel, generate, load_model

# Prompts of very different lengths (1 to ~60 tokens), so rows are padded by different amounts.
PROMPTS = (
    "a",
    "Hi",
    "The quick brown fox",
    "Hello world, this is llmos. " * 4,
    "Numbers 0123456789 and punctuation: ; , . ! ? ( ) [ ] { } < > = + - * / \\ | _ # @ & % $",
    "user: What is the capital of France?\nassistant:",
)


def req(
    prompt: str,
    max_tokens: int = 24,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
) -> GenerateRequest:
    params = GenerationParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop
    )
    return GenerateRequest(id="t", params=params, prompt=prompt)


@pytest.fixture(scope="module")
def loaded(demo_model_dir: Path) -> LoadedModel:
    return load_model(demo_model_dir)


def alone(loaded: LoadedModel, request: GenerateRequest) -> list[GenerateEvent]:
    return list(generate(loaded, request, lambda: False))


def batched(
    loaded: LoadedModel, requests: list[GenerateRequest], *, steps_between: int = 0
) -> dict[str, list[GenerateEvent]]:
    """Run ``requests`` through one BatchDecoder, admitting one every ``steps_between`` steps."""
    decoder = BatchDecoder(loaded)
    got: dict[str, list[GenerateEvent]] = {str(i): [] for i in range(len(requests))}
    for i, request in enumerate(requests):
        got[str(i)] += decoder.admit(str(i), request)
        for _ in range(steps_between):
            for outcome in decoder.step():
                assert outcome.failed is None
                got[outcome.key] += outcome.events
    while len(decoder):
        for outcome in decoder.step():
            assert outcome.failed is None
            got[outcome.key] += outcome.events
    return got


def test_the_demo_model_can_be_batched(loaded: LoadedModel) -> None:
    assert supports_batching(loaded)


@pytest.mark.parametrize("steps_between", [0, 1, 3])
def test_greedy_batched_equals_alone(loaded: LoadedModel, steps_between: int) -> None:
    requests = [req(p, max_tokens=12 + 5 * i) for i, p in enumerate(PROMPTS)]
    got = batched(loaded, requests, steps_between=steps_between)
    for i, request in enumerate(requests):
        assert got[str(i)] == alone(loaded, request), f"prompt {i}"
        done = got[str(i)][-1]
        assert isinstance(done, DoneEvent)
        assert (done.finish_reason, done.completion_tokens) == ("length", request.params.max_tokens)


def test_seeded_sampling_batched_equals_alone(loaded: LoadedModel) -> None:
    requests = [
        req(p, max_tokens=20, temperature=0.9, top_p=0.9 if i % 2 else 1.0, seed=100 + i)
        for i, p in enumerate(PROMPTS)
    ]
    got = batched(loaded, requests, steps_between=1)
    for i, request in enumerate(requests):
        assert got[str(i)] == alone(loaded, request)


def test_stop_strings_and_max_tokens_are_per_sequence(loaded: LoadedModel) -> None:
    full = "".join(e.text for e in alone(loaded, req(PROMPTS[2], max_tokens=40)) if isinstance(e, TokenEvent))
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    requests = [
        req(PROMPTS[2], max_tokens=40, stop=(stop,)),
        req(PROMPTS[3], max_tokens=3),
        req(PROMPTS[4], max_tokens=30),
    ]
    got = batched(loaded, requests)
    for i, request in enumerate(requests):
        assert got[str(i)] == alone(loaded, request)
    stopped = got["0"][-1]
    assert isinstance(stopped, DoneEvent) and stopped.finish_reason == "stop"
    assert "".join(e.text for e in got["0"] if isinstance(e, TokenEvent)) == full[: full.find(stop)]
    assert got["1"][-1] == DoneEvent("length", len_prompt(loaded, PROMPTS[3]), 3)


def len_prompt(loaded: LoadedModel, prompt: str) -> int:
    done = alone(loaded, req(prompt, max_tokens=1))[-1]
    assert isinstance(done, DoneEvent)
    return done.prompt_tokens


def test_a_dropped_row_leaves_the_others_unchanged(loaded: LoadedModel) -> None:
    requests = [req(p, max_tokens=30) for p in PROMPTS[:4]]
    decoder = BatchDecoder(loaded)
    got: dict[str, list[GenerateEvent]] = {}
    for i, request in enumerate(requests):
        got[str(i)] = decoder.admit(str(i), request)
    for step in range(40):
        if step == 5:
            decoder.drop("3")  # the longest prompt leaves: its padding columns are cut off
            decoder.drop("1")
            decoder.drop("unknown")
        for outcome in decoder.step():
            got[outcome.key] += outcome.events
    assert len(decoder) == 0
    for i in (0, 2):
        assert got[str(i)] == alone(loaded, requests[i])
    for i in (1, 3):
        assert not any(isinstance(e, DoneEvent) for e in got[str(i)])


def test_a_refused_request_does_not_join_or_disturb_the_batch(loaded: LoadedModel) -> None:
    decoder = BatchDecoder(loaded)
    events = decoder.admit("ok", req(PROMPTS[1], max_tokens=10))
    with pytest.raises(WorkerRequestError) as info:
        decoder.admit("too-long", req("word " * 3000, max_tokens=10))
    assert info.value.code == "context_length_exceeded"
    assert decoder.active() == ["ok"]
    while len(decoder):
        for outcome in decoder.step():
            events += outcome.events
    assert events == alone(loaded, req(PROMPTS[1], max_tokens=10))


def test_a_request_finished_by_its_first_token_never_joins(loaded: LoadedModel) -> None:
    decoder = BatchDecoder(loaded)
    events = decoder.admit("one", req(PROMPTS[0], max_tokens=1))
    assert isinstance(events[-1], DoneEvent)
    assert len(decoder) == 0
    assert decoder.step() == []


def test_a_row_whose_sampling_fails_leaves_alone(loaded: LoadedModel) -> None:
    decoder = BatchDecoder(loaded)
    decoder.admit("good", req(PROMPTS[1], max_tokens=6))
    decoder.admit("bad", req(PROMPTS[2], max_tokens=6))
    bad = next(row for row in decoder._rows if row.key == "bad")

    def broken(logits: object) -> int:
        raise RuntimeError("probabilities are NaN")

    bad.sequence.choose = broken  # type: ignore[method-assign]
    outcomes = decoder.step()
    assert [(o.key, o.failed is not None) for o in outcomes] == [("good", False), ("bad", True)]
    assert decoder.active() == ["good"]
