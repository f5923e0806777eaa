"""A real echo worker subprocess with a canary file, driven through ModelWorker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import WorkerRequestError, WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.canaries import CANARY_TRIPPED_MESSAGE
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.echo_model import ECHO_CONTEXT_LENGTH

CANARY = "CANARY-9c4e-do-not-leak"
OTHER_CANARY = "Alice Canaryson"


def chat(*contents: str, max_tokens: int = 64, rid: str = "req") -> GenerateRequest:
    return GenerateRequest(
        id=rid,
        params=GenerationParams(max_tokens=max_tokens),
        messages=tuple(ChatMessage("user", c) for c in contents),
    )


async def collect(worker: ModelWorker, request: GenerateRequest) -> tuple[str, DoneEvent]:
    events = [event async for event in worker.generate(request)]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent)), done


def echo_spec(tmp: Path, canary_file: Path | None) -> WorkerSpec:
    return WorkerSpec(
        name="echo",
        kind="echo",
        canary_file=canary_file,
        log_path=tmp / "worker.log",
        restart_backoff_initial_s=0.05,
        start_timeout_s=60.0,
    )


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("echo")


@pytest.fixture(scope="module")
def worker(runner: asyncio.Runner, tmp: Path) -> Iterator[ModelWorker]:
    canary_file = tmp / "canaries.txt"
    canary_file.write_text(f"# test canaries\n{CANARY}\n\n{OTHER_CANARY}\n", encoding="utf-8")
    model_worker = ModelWorker(echo_spec(tmp, canary_file))
    runner.run(model_worker.start())
    runner.run(model_worker.wait_ready(60))
    yield model_worker
    runner.run(model_worker.stop())


def test_ready_with_isolation_and_without_torch(worker: ModelWorker) -> None:
    assert worker.state == "ready"
    assert worker.context_length == ECHO_CONTEXT_LENGTH
    assert worker.isolation is not None
    assert worker.isolation.env_scrubbed and worker.isolation.no_new_privs
    assert worker.pid is not None
    assert "torch" not in Path(f"/proc/{worker.pid}/maps").read_text()


def test_a_clean_request_is_echoed(runner: asyncio.Runner, worker: ModelWorker) -> None:
    text, done = runner.run(collect(worker, chat("my name is <PERSON_1>", "who am I,  <PERSON_1>?\n")))
    assert text == "who am I,  <PERSON_1>?\n"
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("stop", 8, 4)
    text, done = runner.run(collect(worker, chat("one two three", max_tokens=2)))
    assert (text, done.finish_reason) == ("one two ", "length")


@pytest.mark.parametrize("content", [f"see {CANARY} here", f"hi {OTHER_CANARY}"])
def test_a_canary_is_refused_before_generation(
    runner: asyncio.Runner, worker: ModelWorker, tmp: Path, content: str
) -> None:
    restarts = worker.restarts
    with pytest.raises(WorkerRequestError) as info:
        runner.run(collect(worker, chat("clean first message", content, rid="tripped")))
    assert info.value.code == "canary_tripped"
    assert str(info.value) == CANARY_TRIPPED_MESSAGE
    # the worker keeps serving
    assert runner.run(collect(worker, chat("still fine")))[0] == "still fine"
    assert worker.restarts == restarts
    log_text = (tmp / "worker.log").read_text()
    assert "request tripped#" in log_text
    assert "a canary value reached the worker" in log_text


def test_the_log_holds_the_count_but_no_value(runner: asyncio.Runner, worker: ModelWorker, tmp: Path) -> None:
    with pytest.raises(WorkerRequestError):
        runner.run(collect(worker, chat(CANARY)))
    log_text = (tmp / "worker.log").read_text()
    assert "2 canaries" in log_text
    assert "echo model" in log_text
    assert CANARY not in log_text
    assert OTHER_CANARY not in log_text
    assert "9c4e" not in log_text


def test_a_bad_canary_file_fails_the_start_without_the_value(runner: asyncio.Runner, tmp: Path) -> None:
    bad = tmp / "bad-canaries.txt"
    bad.write_text("good value\nxyz\n", encoding="utf-8")
    model_worker = ModelWorker(echo_spec(tmp / "bad", bad))

    async def scenario() -> None:
        await model_worker.start()
        try:
            with pytest.raises(WorkerUnavailable) as info:
                await model_worker.wait_ready(60)
            assert info.value.code == "worker_not_ready"
        finally:
            await model_worker.stop()

    runner.run(scenario())
    assert model_worker.last_error is not None
    assert f"{bad} line 2: a canary value must be at least 4 characters" in model_worker.last_error
    log_text = (tmp / "bad" / "worker.log").read_text()
    assert "canary file refused" in log_text
    assert "xyz" not in log_text and "good value" not in log_text
