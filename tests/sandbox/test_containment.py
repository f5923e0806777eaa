"""Crash containment with real worker processes and real signals: a hang is cut with 504 and a
restart, a crash loop marks the model unhealthy (refused at once) until a worker is ready again,
another model never notices, and every step is reported as a lifecycle event."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.errors import WorkerTimeout, WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.events import WorkerEvent, exit_reason, safe_code


def chat(text: str, rid: str = "req") -> GenerateRequest:
    return GenerateRequest(
        id=rid, params=GenerationParams(max_tokens=16), messages=(ChatMessage("user", text),)
    )


async def answer(worker: ModelWorker, text: str) -> str:
    events = [event async for event in worker.generate(chat(text))]
    assert isinstance(events[-1], DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def spec(tmp: Path, name: str, **overrides: object) -> WorkerSpec:
    fields: dict[str, object] = {
        "name": name,
        "kind": "echo",
        "log_path": tmp / f"{name}.log",
        "restart_backoff_initial_s": 0.1,
        "restart_backoff_max_s": 0.4,
        "start_timeout_s": 60.0,
        "request_timeout_s": 1.0,
        "unhealthy_after_failures": 2,
    }
    fields.update(overrides)
    return WorkerSpec(**fields)  # type: ignore[arg-type]


async def new_pid(worker: ModelWorker, old: int | None, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = worker.pid
        if worker.state == "ready" and pid is not None and pid != old:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"no new ready worker; state {worker.state}")


def test_a_hung_worker_is_killed_its_request_gets_a_timeout_and_it_restarts(tmp_path: Path) -> None:
    events: list[WorkerEvent] = []

    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path, "hangs"), on_event=events.append)
        await worker.start()
        try:
            pid = await new_pid(worker, None)
            os.kill(pid, signal.SIGSTOP)  # alive, holding the request, answering nothing: a hang
            started = time.monotonic()
            with pytest.raises(WorkerTimeout, match="did not answer within 1 s"):
                await asyncio.wait_for(answer(worker, "are you there"), 20)  # not the watchdog: a failure
            assert 0.9 < time.monotonic() - started < 10
            replacement = await new_pid(worker, pid)
            assert await answer(worker, "back again") == "back again"
            assert replacement != pid and worker.restarts == 1
        finally:
            await worker.stop()

    asyncio.run(scenario())
    kinds = [(e.kind, e.reasons) for e in events]
    assert kinds[0][0] == "ready"
    assert ("hung", ("worker_hung",)) in kinds
    assert ("exited", ("worker_exited", "signal_sigkill")) in kinds
    assert kinds[-1][0] == "ready"


def test_a_long_answer_that_keeps_streaming_is_not_a_hang(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path, "slow", request_timeout_s=0.3))
        await worker.start()
        try:
            await new_pid(worker, None)
            pieces = 0
            async for event in worker.generate(chat("word " * 10)):
                if isinstance(event, TokenEvent):
                    pieces += 1
                    await asyncio.sleep(0.1)  # a slow consumer: 1 s in all, frames keep coming
            assert pieces == 10
            assert worker.restarts == 0
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_crash_loop_marks_the_model_unhealthy_until_a_worker_is_ready_again(tmp_path: Path) -> None:
    events: list[WorkerEvent] = []

    async def scenario() -> None:
        victim = ModelWorker(spec(tmp_path, "victim"), on_event=events.append)
        bystander = ModelWorker(spec(tmp_path, "bystander"))
        await victim.start()
        await bystander.start()
        try:
            pid = await new_pid(victim, None)
            await new_pid(bystander, None)
            for sig in (signal.SIGSEGV, signal.SIGKILL):  # a segfault, then as the OOM killer does
                os.kill(pid, sig)
                assert (
                    await answer(bystander, f"still here after {sig.name}") == f"still here after {sig.name}"
                )
                if sig is signal.SIGSEGV:
                    pid = await new_pid(victim, pid)
            while victim.state != "unhealthy":
                await asyncio.sleep(0.01)
            assert victim.unhealthy and victim.failures == 2
            started = time.monotonic()
            with pytest.raises(WorkerUnavailable) as refused:
                await answer(victim, "hello?")
            assert refused.value.code == "model_unhealthy"
            assert time.monotonic() - started < 0.5  # refused at once, not after start_timeout_s
            assert 1 <= refused.value.retry_after <= 1
            await new_pid(victim, pid)  # the restart goes on in the background and succeeds
            assert not victim.unhealthy
            assert await answer(victim, "recovered") == "recovered"
            assert await answer(bystander, "all along") == "all along"
            assert bystander.restarts == 0
        finally:
            await victim.stop()
            await bystander.stop()

    asyncio.run(scenario())
    reasons = [e.reasons for e in events]
    assert ("worker_exited", "signal_sigsegv") in reasons
    assert ("worker_exited", "signal_sigkill") in reasons
    assert ("model_unhealthy", "failures_2") in reasons
    assert reasons[-1] == ("model_recovered",)
    assert all(e.model == "victim" for e in events)


def test_a_worker_that_stayed_healthy_starts_the_failure_count_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path, "steady", healthy_after_s=0.2))
        await worker.start()
        try:
            pid = await new_pid(worker, None)
            for _ in range(3):
                await asyncio.sleep(0.3)  # healthy for longer than healthy_after_s
                os.kill(pid, signal.SIGKILL)
                pid = await new_pid(worker, pid)
            assert worker.failures == 1 and not worker.unhealthy
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_reason_codes_from_exits_and_from_the_untrusted_worker() -> None:
    assert exit_reason(-signal.SIGSYS) == "signal_sigsys"
    assert exit_reason(-signal.SIGKILL) == "signal_sigkill"
    assert exit_reason(3) == "exit_code_3"
    assert exit_reason(-200) == "signal_200"
    assert safe_code("unsafe_weights", "worker_fatal") == "unsafe_weights"
    for bad in ("Unsafe", "sk-llmos-secret value", "", 7, None, "x" * 65):
        assert safe_code(bad, "worker_fatal") == "worker_fatal"
