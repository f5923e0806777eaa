"""Workers spawned through the shared fork server, supervised by a real ModelWorker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ForkServerError
from gateway.types import DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.events import EXIT_STATUS_UNKNOWN, WorkerEvent, exit_reason
from sandbox.forkproto import CHANNEL_FD
from sandbox.isolation import IsolationReport, build_worker_env
from sandbox.protocol import recv_frames
from sandbox.spawner import ForkServer, fork_server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux only")


def shared() -> ForkServer:
    return fork_server(sys.executable)


def spec(tmp: Path, name: str = "echo", **kw: Any) -> WorkerSpec:
    kw.setdefault("kind", "echo")
    return WorkerSpec(
        name=name,
        spawner=kw.pop("spawner", "fork_server"),
        log_path=tmp / f"{name}.log",
        restart_backoff_initial_s=0.05,
        start_timeout_s=120.0,
        **kw,
    )


async def answer(worker: ModelWorker, text: str, max_tokens: int = 64) -> str:
    request = GenerateRequest(
        id=text, params=GenerationParams(max_tokens=max_tokens, temperature=0.0), prompt=text
    )
    events = [event async for event in worker.generate(request)]
    assert isinstance(events[-1], DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def new_pid(worker: ModelWorker, old: int | None) -> int:
    await until(lambda: worker.state == "ready" and worker.pid not in (None, old))
    assert worker.pid is not None
    return worker.pid


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_an_echo_worker_forked_by_the_server_serves(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path))
        await worker.start()
        try:
            await worker.wait_ready(120)
            assert worker.pid is not None and parent_of(worker.pid) == shared().pid
            assert await answer(worker, "forked and serving") == "forked and serving"
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_transformers_worker_forked_by_the_server_answers_as_an_exec_one(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    async def run(spawner: str) -> str:
        worker = ModelWorker(
            spec(tmp_path, f"demo-{spawner}", kind="transformers", model_dir=demo_model_dir, spawner=spawner)
        )
        await worker.start()
        try:
            await worker.wait_ready(120)
            return await answer(worker, "The gateway", max_tokens=12)
        finally:
            await worker.stop()

    async def scenario() -> None:
        forked, executed = await run("fork_server"), await run("exec")
        assert forked == executed and forked  # greedy: the same text from the same weights

    asyncio.run(scenario())


def _layers(report: IsolationReport | None, work_dir_name: str) -> list[tuple[str, str, str]]:
    assert report is not None
    return [
        (layer.name, layer.status, layer.detail.replace(work_dir_name, "WORK")) for layer in report.layers
    ]


def test_the_isolation_report_is_the_same_as_an_exec_workers(tmp_path: Path) -> None:
    async def report(spawner: str) -> tuple[list[tuple[str, str, str]], tuple[str, ...]]:
        worker = ModelWorker(spec(tmp_path, spawner, spawner=spawner))
        await worker.start()
        try:
            await worker.wait_ready(120)
            process = worker._process
            assert process is not None
            layers = _layers(worker.isolation, str(process.work_dir))
            return layers, worker.isolation.notes if worker.isolation else ()
        finally:
            await worker.stop()

    async def scenario() -> None:
        forked, executed = await report("fork_server"), await report("exec")
        assert forked == executed
        statuses = {name: status for name, status, _ in forked[0]}
        if os.geteuid() == 0:  # as root every layer this host offers applies: check the key ones did
            assert statuses["network"] == statuses["descriptors"] == "applied"
            assert {statuses["filesystem"], statuses["seccomp"]} <= {"applied", "unavailable"}

    asyncio.run(scenario())


def test_torch_threads_follow_the_spec_in_a_forked_worker(tmp_path: Path) -> None:
    payload = tmp_path / "threads.py"
    payload.write_text("import torch\nraise RuntimeError(f'threads={torch.get_num_threads()}')\n")

    async def threads(spawner: str) -> str:
        worker = ModelWorker(spec(tmp_path, f"t-{spawner}", spawner=spawner, threads=1, payload=payload))
        await worker.start()
        try:
            await until(lambda: worker.last_error is not None)
            return re.findall(r"threads=\d+", worker.last_error or "")[0]
        finally:
            await worker.stop()

    async def scenario() -> None:
        assert await threads("fork_server") == await threads("exec") == "threads=1"

    asyncio.run(scenario())


def test_a_crash_is_noticed_with_its_signal_and_the_worker_restarts(tmp_path: Path) -> None:
    events: list[WorkerEvent] = []

    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path), on_event=events.append)
        await worker.start()
        try:
            await worker.wait_ready(120)
            first = worker.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            second = await new_pid(worker, first)
            assert parent_of(second) == shared().pid
            assert await answer(worker, "back again") == "back again"
        finally:
            await worker.stop()

    asyncio.run(scenario())
    exits = [e for e in events if e.kind == "exited"]
    assert [e.reasons for e in exits] == [("worker_exited", "signal_sigkill")]


def test_killing_the_fork_server_loses_no_worker_and_the_next_spawn_starts_a_new_one(tmp_path: Path) -> None:
    events: list[WorkerEvent] = []

    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path), on_event=events.append)
        await worker.start()
        try:
            await worker.wait_ready(120)
            old_server, first = shared().pid, worker.pid
            assert old_server is not None and first is not None
            os.kill(old_server, signal.SIGKILL)
            await until(lambda: shared().pid is None)  # the client saw its socket close
            assert await answer(worker, "still served") == "still served"  # the worker lives on
            os.kill(first, signal.SIGKILL)  # its exit must still be noticed, without the server
            second = await new_pid(worker, first)
            new_server = shared().pid
            assert new_server not in (None, old_server) and parent_of(second) == new_server
            assert await answer(worker, "after the restart") == "after the restart"
        finally:
            await worker.stop()

    asyncio.run(scenario())
    exits = [e for e in events if e.kind == "exited"]
    assert [e.reasons for e in exits] == [("worker_exited", "exit_status_unknown")]


def test_a_spawn_after_the_idle_fork_server_died_starts_a_new_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = ModelWorker(spec(tmp_path))
        await worker.start()
        await worker.wait_ready(120)
        await worker.stop()
        old = shared().pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await until(lambda: shared().pid is None)
        await worker.start()
        try:
            await worker.wait_ready(120)
            assert shared().pid not in (None, old)
            assert await answer(worker, "new server") == "new server"
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_fork_server_that_cannot_start_is_a_failed_start(tmp_path: Path) -> None:
    server = ForkServer("/nonexistent/python", tmp_path / "forkserver.log")

    async def scenario() -> None:
        with pytest.raises(ForkServerError, match="could not start the worker fork server"):
            await server.spawn(["--fd", "3"], env={}, cwd=tmp_path, channel=0, stderr=None, timeout=10)
        slow = ForkServer(sys.executable, tmp_path / "forkserver.log")
        with pytest.raises(ForkServerError, match="not ready within"):
            await slow.spawn(["--fd", "3"], env={}, cwd=tmp_path, channel=0, stderr=None, timeout=0.01)
        assert slow.pid is None  # killed; the next spawn starts another

    asyncio.run(scenario())


def test_an_unknown_exit_status_has_its_own_reason_code() -> None:
    assert exit_reason(EXIT_STATUS_UNKNOWN) == "exit_status_unknown"
    assert exit_reason(-signal.SIGKILL) == "signal_sigkill"
    assert exit_reason(3) == "exit_code_3"


def test_a_forked_process_handle_behaves_like_an_asyncio_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            env = build_worker_env(tmp_path, pythonpath=str(Path(__file__).resolve().parents[2]))
            args = WorkerSpec(name="h", kind="echo").worker_args(CHANNEL_FD)
            proc = await shared().spawn(
                args, env=env, cwd=tmp_path, channel=theirs.fileno(), stderr=None, timeout=120
            )
            theirs.close()
            assert proc.returncode is None and proc.pid > 0
            assert next(recv_frames(ours))["type"] == "ready"
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGTERM
            assert proc.returncode == -signal.SIGTERM and await proc.wait() == -signal.SIGTERM
            with pytest.raises(ProcessLookupError):
                proc.kill()

    asyncio.run(scenario())


GATEWAY = """
import asyncio, sys
from pathlib import Path
from sandbox.process import WorkerSpec, spawn_worker
from sandbox.protocol import read_frame
from sandbox.spawner import fork_server

async def main():
    spec = WorkerSpec(name="orphan", kind="echo", spawner="fork_server", log_path=Path(sys.argv[1]))
    process = await spawn_worker(spec)
    assert (await read_frame(process.reader))["type"] == "ready"
    print(process.pid, fork_server(spec.python).pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_when_the_gateway_dies_the_fork_server_and_its_workers_exit(tmp_path: Path) -> None:
    gateway = subprocess.Popen(
        [sys.executable, "-c", GATEWAY, str(tmp_path / "orphan.log")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert gateway.stdout is not None
        worker, server = (int(pid) for pid in gateway.stdout.readline().split())
        assert _running(worker) and _running(server)
    finally:
        gateway.kill()
        gateway.wait()
        if gateway.stdout is not None:
            gateway.stdout.close()
    deadline = time.monotonic() + 30
    while _running(worker) or _running(server):
        assert time.monotonic() < deadline, "the fork server or its worker outlived the gateway"
        time.sleep(0.05)
