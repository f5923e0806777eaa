"""Hostile model code inside a real sandboxed worker (issue 7, item 4; docs/threat-model.md).

Each test starts a real echo worker through ``ModelWorker`` with a payload (``WorkerSpec.payload``)
that the worker runs after isolation, where malicious model code would run, and reads the
payload's verdict from the worker's ``fatal`` message. Every attack has a control: the same
payload with the layer that stops it left off (``SandboxSettings.unsafe_skip_layers``) must
succeed, so these tests fail if the layer stops working, or if the payload cannot tell.

Every test runs twice: with workers exec'd as fresh interpreters and forked by the fork server
(``WorkerSpec.spawner``), whose children must be exactly as confined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from gateway.errors import WorkerUnavailable
from gateway.state import init_state
from gateway.types import DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.isolation import SandboxSettings
from sandbox.isolation.probe import probe_host
from sandbox.spawner import SpawnerKind
from tests.sandbox.hostile import payloads
from tests.sandbox.hostile.payloads import payload_source, verdict

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the layers are Linux only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="as root every layer this host offers applies"),
]

FACTS = probe_host()
needs_landlock = pytest.mark.skipif(FACTS.landlock_abi == 0, reason="no Landlock on this host")
needs_seccomp = pytest.mark.skipif(not FACTS.libseccomp, reason="no libseccomp on this host")
GIB = 2**30
SPAWNER: SpawnerKind = "exec"  # set for each test by the ``spawner`` fixture


@pytest.fixture(autouse=True, params=["exec", "fork_server"])
def spawner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SpawnerKind:
    """How this test's workers start; every spec below reads it."""
    kind: SpawnerKind = request.param
    monkeypatch.setattr(sys.modules[__name__], "SPAWNER", kind)
    return kind


def prompt(request_id: str, text: str) -> GenerateRequest:
    return GenerateRequest(id=request_id, params=GenerationParams(max_tokens=64), prompt=text)


def hostile_spec(tmp_path: Path, source: str, *, skip: tuple[str, ...] = (), **kw: Any) -> WorkerSpec:
    payload = tmp_path / "payload.py"
    payload.write_text(source)
    max_processes = kw.pop("max_processes", 512)
    return WorkerSpec(
        name="hostile",
        kind="echo",
        payload=payload,
        log_path=tmp_path / "hostile.log",
        start_timeout_s=60.0,
        restart_backoff_initial_s=kw.pop("backoff_s", 60.0),
        restart_backoff_max_s=60.0,
        sandbox=SandboxSettings(unsafe_skip_layers=skip, max_processes=max_processes),
        spawner=SPAWNER,
        **kw,
    )


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def run_hostile(spec: WorkerSpec) -> ModelWorker:
    """Start the worker, wait until its start failed (a fatal frame or an exit), stop it."""
    worker = ModelWorker(spec)

    async def scenario() -> None:
        await worker.start()
        try:
            await _until(lambda: worker.last_error is not None, 60)
            with pytest.raises(WorkerUnavailable):
                await worker.wait_ready(0.01)
        finally:
            await worker.stop()

    asyncio.run(scenario())
    return worker


def attack(
    tmp_path: Path, fn: Callable[..., dict[str, str]], *, skip: tuple[str, ...] = (), **kw: Any
) -> dict[str, str]:
    params = kw.pop("params", {})
    return verdict(
        run_hostile(hostile_spec(tmp_path, payload_source(fn, **params), skip=skip, **kw)).last_error
    )


# -- the payload hook itself --------------------------------------------------------------------


def test_a_payload_that_returns_lets_the_worker_serve(tmp_path: Path) -> None:
    worker = ModelWorker(hostile_spec(tmp_path, payload_source(payloads.returns_normally)))

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
            events = [e async for e in worker.generate(prompt("r1", "still here"))]
            assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "still here"
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert "running the test payload" in (tmp_path / "hostile.log").read_text()


# -- network ------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on 127.0.0.1 in the gateway's (the test's) network namespace."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        srv.setblocking(False)
        yield srv


def accepted(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_outbound_tcp_is_blocked(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = attack(tmp_path, payloads.connect_tcp, params={"port": port})
    assert result["connect"] in ("blocked: EPERM", "blocked: ENETUNREACH", "blocked: EACCES"), result
    assert not accepted(listener)


def test_control_outbound_tcp_works_without_the_network_layer(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    result = attack(tmp_path, payloads.connect_tcp, params={"port": port}, skip=("network",))
    assert result["connect"] == "ok"
    assert accepted(listener)


# -- reading secrets ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real gateway state directory (0700) with its audit signing key (root, 0600)."""
    state = tmp_path_factory.mktemp("gateway") / "state"
    config = Config(state_dir=state)
    init_state(config, with_demo_model=False)
    key = config.signing_key
    assert key.stat().st_uid == 0 and key.stat().st_mode & 0o777 == 0o600
    return key


@needs_landlock
def test_the_gateway_signing_key_and_etc_shadow_cannot_be_read(tmp_path: Path, signing_key: Path) -> None:
    paths = [str(signing_key), "/etc/shadow"]
    result = attack(tmp_path, payloads.read_files, params={"paths": paths})
    assert result == {path: "blocked: EACCES" for path in paths}


@needs_landlock
def test_control_without_landlock_the_kept_read_capability_reads_them(
    tmp_path: Path, signing_key: Path
) -> None:
    # The worker runs as uid 65534 but keeps CAP_DAC_READ_SEARCH: Landlock alone confines it.
    paths = [str(signing_key), "/etc/shadow"]
    result = attack(tmp_path, payloads.read_files, params={"paths": paths}, skip=("filesystem",))
    assert result == {path: "ok" for path in paths}


# -- writing ------------------------------------------------------------------------------------


@pytest.fixture
def outside_paths(tmp_path: Path) -> Iterator[list[str]]:
    """Files the worker must not create: in the test's tmp dir and in /tmp itself (world-writable)."""
    in_tmp = Path(tempfile.mkdtemp(prefix="llmos-hostile-")) / "pwned"
    in_tmp.parent.chmod(0o1777)
    yield [str(tmp_path / "pwned"), str(in_tmp)]
    shutil.rmtree(in_tmp.parent, ignore_errors=True)


@needs_landlock
def test_writing_outside_the_temp_dir_is_blocked(tmp_path: Path, outside_paths: list[str]) -> None:
    result = attack(tmp_path, payloads.write_files, params={"paths": outside_paths})
    assert result == {**{path: "blocked: EACCES" for path in outside_paths}, "own temp dir": "ok"}
    assert not any(Path(path).exists() for path in outside_paths)


@needs_landlock
def test_control_writes_land_without_landlock_and_uid_drop(tmp_path: Path, outside_paths: list[str]) -> None:
    result = attack(
        tmp_path, payloads.write_files, params={"paths": outside_paths}, skip=("filesystem", "uid")
    )
    assert result == {**{path: "ok" for path in outside_paths}, "own temp dir": "ok"}
    assert all(Path(path).exists() for path in outside_paths)


# -- running programs ---------------------------------------------------------------------------


@needs_landlock
def test_exec_of_bin_sh_is_blocked(tmp_path: Path) -> None:
    result = attack(tmp_path, payloads.exec_shell)
    assert result == {"execv": "blocked: EACCES", "subprocess": "blocked: EACCES"}


@needs_landlock
def test_control_exec_works_without_landlock(tmp_path: Path) -> None:
    assert attack(tmp_path, payloads.exec_shell, skip=("filesystem",)) == {"execv": "ok", "subprocess": "ok"}


# -- exhausting the host ------------------------------------------------------------------------

FORK_CAP = 2000  # the payload never forks more, whatever the limit does: the host survives a failure


def kill_group(result: dict[str, str]) -> None:
    """Belt and braces: the children exit by themselves, but never leave any behind."""
    pgid = int(result["pgid"])
    if pgid > 1 and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def test_a_fork_bomb_stops_at_the_process_limit(tmp_path: Path) -> None:
    result = attack(tmp_path, payloads.fork_bomb, params={"cap": FORK_CAP}, max_processes=64)
    kill_group(result)
    assert result["fork"] == "blocked: EAGAIN", result
    assert int(result["forked"]) < 64


def test_control_forks_go_past_the_limit_without_rlimits(tmp_path: Path) -> None:
    result = attack(tmp_path, payloads.fork_bomb, params={"cap": 100}, max_processes=64, skip=("rlimits",))
    kill_group(result)
    assert result == {**result, "fork": "ok", "forked": "100"}


def test_memory_past_the_cap_is_refused(tmp_path: Path) -> None:
    result = attack(
        tmp_path, payloads.allocate, params={"nbytes": 2 * GIB, "touch": True}, memory_limit_bytes=GIB
    )
    assert result == {"mmap": "blocked: ENOMEM", "bytearray": "blocked: MemoryError"}


def test_control_memory_past_the_cap_is_granted_without_rlimits(tmp_path: Path) -> None:
    # touch=False: the mapping is reserved, not filled, so the control costs no real memory
    result = attack(
        tmp_path,
        payloads.allocate,
        params={"nbytes": 2 * GIB, "touch": False},
        memory_limit_bytes=GIB,
        skip=("rlimits",),
    )
    assert result == {"mmap": "ok"}


# -- seccomp kills ------------------------------------------------------------------------------


@needs_seccomp
def test_a_foreign_abi_syscall_kills_the_worker_and_the_exit_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmos.sandbox")
    worker = run_hostile(hostile_spec(tmp_path, payload_source(payloads.foreign_abi_syscall)))
    assert worker.last_error is not None and not worker.last_error.startswith(payloads.VERDICT)
    assert f"exited with {-signal.SIGSYS}" in caplog.text


@needs_seccomp
def test_control_a_foreign_abi_syscall_returns_without_seccomp(tmp_path: Path) -> None:
    result = attack(tmp_path, payloads.foreign_abi_syscall, skip=("seccomp",))
    assert result["x32 syscall"] in ("ok", "blocked: errno 38"), result  # ENOSYS without x32 support


# -- pickle weights (item 5) --------------------------------------------------------------------


class Evil:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="llmos-pickle-")) / "unpickled"
    path.parent.chmod(0o1777)  # even the worker's uid could create it: only never unpickling stops it
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def pickled_model(demo_model_dir: Path, tmp_path: Path, marker: Path) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
    return model_dir


def test_control_the_pickle_runs_code_when_loaded(pickled_model: Path, marker: Path) -> None:
    with pickle.loads((pickled_model / "pytorch_model.bin").read_bytes()):  # noqa: S301  (the point)
        pass
    assert marker.exists()


def test_a_pickle_in_the_model_directory_is_refused_and_never_loaded(
    pickled_model: Path, marker: Path, tmp_path: Path
) -> None:
    spec = WorkerSpec(
        name="pickled",
        model_dir=pickled_model,
        log_path=tmp_path / "w.log",
        start_timeout_s=60,
        spawner=SPAWNER,
    )
    worker = run_hostile(spec)
    assert worker.last_error is not None
    assert worker.last_error.startswith("unsafe_weights: refusing model directory"), worker.last_error
    assert "pytorch_model.bin" in worker.last_error and "unsafe_allow_pickle_weights" in worker.last_error
    assert not marker.exists()


def test_unsafe_allow_pickle_weights_loads_the_model_with_a_warning(
    pickled_model: Path, marker: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "w.log"
    spec = WorkerSpec(
        name="pickled",
        model_dir=pickled_model,
        log_path=log_path,
        start_timeout_s=60,
        unsafe_allow_pickle_weights=True,
        spawner=SPAWNER,
    )
    worker = ModelWorker(spec)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert "UNSAFE: loading model directory" in log_path.read_text()
    assert not marker.exists()  # the safetensors weights are preferred; the pickle stays unread


# -- the gateway keeps serving ------------------------------------------------------------------


def test_other_models_keep_serving_while_a_hostile_worker_crash_loops(tmp_path: Path) -> None:
    echo = ModelWorker(
        WorkerSpec(
            name="echo", kind="echo", log_path=tmp_path / "echo.log", start_timeout_s=60, spawner=SPAWNER
        )
    )
    hostile_dir = tmp_path / "hostile"
    hostile_dir.mkdir()
    hostile = ModelWorker(
        hostile_spec(
            hostile_dir,
            payload_source(payloads.fork_bomb, cap=FORK_CAP),
            max_processes=64,
            backoff_s=0.1,
        )
    )

    async def ask(text: str) -> str:
        events = [e async for e in echo.generate(prompt(text, text))]
        assert isinstance(events[-1], DoneEvent)
        return "".join(e.text for e in events if isinstance(e, TokenEvent))

    async def scenario() -> None:
        await echo.start()
        try:
            await echo.wait_ready(60)
            assert await ask("before") == "before"
            await hostile.start()
            answers = 0
            deadline = time.monotonic() + 60
            while hostile.restarts < 3 and time.monotonic() < deadline:
                assert await ask(f"during {answers}") == f"during {answers}"
                answers += 1
                await asyncio.sleep(0.05)
            assert hostile.restarts >= 3 and answers > 0
            await hostile.stop()
            assert await ask("after") == "after"
        finally:
            await hostile.stop()
            await echo.stop()

    asyncio.run(scenario())
    result = verdict(hostile.last_error)
    kill_group(result)
    assert result["fork"] == "blocked: EAGAIN"
