"""ModelWorker against real worker subprocesses running the demo model."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from gateway.errors import WorkerRequestError, WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.isolation import ALLOWED_ENV_KEYS
from sandbox.textstream import REPLACEMENT_CHAR

SECRET = "llmos-test-secret-4b1d"
LONG = 1900  # tokens; the demo model practically never emits EOS under greedy decoding


def req(
    prompt: str = "Hello world",
    *,
    max_tokens: int = 8,
    temperature: float = 0.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
    rid: str = "req",
) -> GenerateRequest:
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed, stop=stop)
    return GenerateRequest(id=rid, params=params, prompt=prompt)


async def collect(worker: ModelWorker, request: GenerateRequest) -> tuple[str, DoneEvent]:
    events = [event async for event in worker.generate(request)]
    assert isinstance(events[-1], DoneEvent)
    assert all(isinstance(e, TokenEvent) for e in events[:-1])
    return "".join(e.text for e in events if isinstance(e, TokenEvent)), events[-1]


def spec(model_dir: Path, log_dir: Path, **overrides: object) -> WorkerSpec:
    values: dict[str, object] = {
        "name": "demo",
        "model_dir": model_dir,
        "log_path": log_dir / "worker.log",
        "restart_backoff_initial_s": 0.05,
        "start_timeout_s": 60.0,
        "max_queue": 1,
    }
    values.update(overrides)
    return WorkerSpec(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def worker(runner: asyncio.Runner, demo_model_dir: Path, log_dir: Path) -> Iterator[ModelWorker]:
    """One worker for the module, started with a secret in the gateway's environment."""
    model_worker = ModelWorker(spec(demo_model_dir, log_dir))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMOS_TEST_SECRET", SECRET)
        runner.run(model_worker.start())
        runner.run(model_worker.wait_ready(60))
    yield model_worker
    runner.run(model_worker.stop())


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if item)


def test_ready_worker_reports_pid_context_and_isolation(worker: ModelWorker) -> None:
    assert worker.state == "ready"
    assert worker.pid is not None and worker.pid != os.getpid()
    assert worker.context_length == 2048
    assert worker.isolation is not None
    assert worker.isolation.env_scrubbed and worker.isolation.fds_closed
    assert worker.isolation.no_new_privs and worker.isolation.core_dumps_disabled


def test_worker_cannot_see_gateway_secrets(worker: ModelWorker) -> None:
    assert os.environ.get("LLMOS_TEST_SECRET") is None  # the fixture set it only around start()
    assert worker.pid is not None
    env = environ_of(worker.pid)
    assert "LLMOS_TEST_SECRET" not in env
    assert SECRET not in "".join(env.values())
    assert set(env) <= ALLOWED_ENV_KEYS
    assert env["HOME"] == env["TMPDIR"] != os.environ.get("HOME")


def test_generate_streams_tokens_then_done(
    runner: asyncio.Runner, worker: ModelWorker, demo_model_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)
    prompt_tokens = len(tokenizer("<s>user: Hi\nassistant:", add_special_tokens=False)["input_ids"])
    chat = GenerateRequest(
        id="chat",
        params=GenerationParams(max_tokens=10, temperature=0.0),
        messages=(ChatMessage("user", "Hi"),),
    )
    text, done = runner.run(collect(worker, chat))
    assert text
    assert done.finish_reason == "length"
    assert done.completion_tokens == 10
    assert done.prompt_tokens == prompt_tokens


def test_greedy_and_seeded_sampling_are_reproducible(runner: asyncio.Runner, worker: ModelWorker) -> None:
    async def scenario() -> None:
        assert await collect(worker, req()) == await collect(worker, req())
        seeded = await collect(worker, req(temperature=1.0, seed=11, max_tokens=20))
        assert seeded == await collect(worker, req(temperature=1.0, seed=11, max_tokens=20))
        assert seeded[0] != (await collect(worker, req(temperature=1.0, seed=12, max_tokens=20)))[0]

    runner.run(scenario())


def test_stop_string_is_respected(runner: asyncio.Runner, worker: ModelWorker) -> None:
    async def scenario() -> None:
        full, _ = await collect(worker, req(max_tokens=40))
        tail = full[len(full) // 2 :]
        stop = next(tail[i : i + 2] for i in range(len(tail)) if REPLACEMENT_CHAR not in tail[i : i + 2])
        text, done = await collect(worker, req(max_tokens=40, stop=(stop,)))
        assert text == full[: full.find(stop)]
        assert done.finish_reason == "stop"

    runner.run(scenario())


def test_too_long_context_is_a_request_error(runner: asyncio.Runner, worker: ModelWorker) -> None:
    async def scenario() -> None:
        with pytest.raises(WorkerRequestError) as info:
            await collect(worker, req(max_tokens=2048))
        assert info.value.code == "context_length_exceeded"
        await collect(worker, req())  # still serving

    runner.run(scenario())


def test_closing_a_stream_early_cancels_it(
    runner: asyncio.Runner, worker: ModelWorker, log_dir: Path
) -> None:
    async def scenario() -> None:
        stream = worker.generate(req(max_tokens=LONG, rid="abandoned"))
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        _, done = await collect(worker, req(max_tokens=3, rid="after"))
        assert done.completion_tokens == 3

    runner.run(scenario())
    log = (log_dir / "worker.log").read_text()
    assert re.search(r"request abandoned#\d+ cancelled", log)
    assert not re.search(r"request abandoned#\d+ done", log)


def test_overload_is_refused_at_once(runner: asyncio.Runner, worker: ModelWorker) -> None:
    async def scenario() -> None:
        running = worker.generate(req(max_tokens=LONG, rid="running"))
        await anext(running)
        joined = worker.generate(req(max_tokens=30, rid="joined"))  # batched with "running"
        first = await anext(joined)
        with pytest.raises(WorkerUnavailable) as info:
            await anext(worker.generate(req(rid="refused")))
        assert info.value.code == "model_overloaded"
        rest = [event async for event in joined]  # finishes while "running" still runs
        assert isinstance(first, TokenEvent) and isinstance(rest[-1], DoneEvent)
        assert rest[-1].completion_tokens == 30
        await running.aclose()
        await collect(worker, req(rid="later"))

    runner.run(scenario())


def test_killed_worker_fails_its_requests_and_comes_back(
    runner: asyncio.Runner, worker: ModelWorker, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        old_pid, old_restarts = worker.pid, worker.restarts
        assert old_pid is not None
        running = worker.generate(req(max_tokens=LONG, rid="victim"))
        await anext(running)
        bystander = asyncio.create_task(collect(worker, req(max_tokens=LONG, rid="bystander")))
        await asyncio.sleep(0.01)
        os.kill(old_pid, signal.SIGKILL)
        with pytest.raises(WorkerUnavailable) as info:
            async for _ in running:
                pass
        assert info.value.code == "worker_crashed"
        assert "stopped unexpectedly; it is being restarted" in str(info.value)
        with pytest.raises(WorkerUnavailable) as bystander_info:
            await bystander
        assert bystander_info.value.code == "worker_crashed"

        await worker.wait_ready(60)
        assert worker.pid not in (None, old_pid)
        assert worker.restarts == old_restarts + 1
        with pytest.raises(ProcessLookupError):
            os.kill(old_pid, 0)
        _, done = await collect(worker, req(max_tokens=4))
        assert done.completion_tokens == 4

    with caplog.at_level(logging.INFO, logger="llmos.sandbox"):
        runner.run(scenario())
    assert any("restart #" in r.getMessage() for r in caplog.records if r.name == "llmos.sandbox")


def test_stop_fails_in_flight_requests_and_leaves_no_process(
    runner: asyncio.Runner, demo_model_dir: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        own = ModelWorker(spec(demo_model_dir, tmp_path))
        await own.start()
        stream = own.generate(req(max_tokens=LONG))  # sent before ready: waits for the worker
        await anext(stream)
        pid = own.pid
        assert pid is not None
        home = Path(environ_of(pid)["HOME"])
        assert home.is_dir()
        stopping = asyncio.create_task(own.stop())
        with pytest.raises(WorkerUnavailable) as info:
            async for _ in stream:
                pass
        assert info.value.code == "worker_stopped"
        await stopping
        assert (own.state, own.pid) == ("stopped", None)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not home.exists()
        with pytest.raises(WorkerUnavailable) as after:
            await anext(own.generate(req()))
        assert after.value.code == "worker_stopped"

    runner.run(scenario())


def test_pickle_model_is_refused_and_reported(
    runner: asyncio.Runner, demo_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"")

    async def scenario() -> ModelWorker:
        bad = ModelWorker(spec(model_dir, tmp_path, name="bad"))
        await bad.start()
        try:
            with pytest.raises(WorkerUnavailable) as info:
                await bad.wait_ready(30)  # fails as soon as the fatal frame arrives
            assert info.value.code == "worker_not_ready"
            with pytest.raises(WorkerUnavailable) as info:
                await anext(bad.generate(req()))
            assert info.value.code == "worker_not_ready"
            await asyncio.sleep(0.3)  # let it retry with backoff
        finally:
            await bad.stop()
        return bad

    with caplog.at_level(logging.ERROR, logger="llmos.sandbox"):
        bad = runner.run(scenario())
    assert bad.last_error is not None and "pytorch_model.bin" in bad.last_error
    assert "only safetensors weights are allowed" in bad.last_error
    assert bad.restarts >= 1
    assert any("pytorch_model.bin" in r.getMessage() for r in caplog.records)
