"""The fork server process driven directly over its control socket, without the gateway client."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.forkproto import (
    CHANNEL_FD,
    MAX_MESSAGE,
    Exited,
    Failed,
    Ready,
    ServerMessage,
    Spawned,
    SpawnRequest,
    decode_reply,
    received_fds,
)
from sandbox.forkserver import fork_hazard
from sandbox.isolation import build_worker_env
from sandbox.process import WorkerSpec
from sandbox.protocol import recv_frames, send_frame
from sandbox.spawner import SERVER_ENV

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux only")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ECHO_ARGS = tuple(WorkerSpec(name="raw", kind="echo").worker_args(CHANNEL_FD))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    work_dir: Path

    def send(self, request: SpawnRequest, fds: list[int]) -> None:
        self.sock.sendmsg([request.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def receive(self) -> tuple[ServerMessage | None, list[int]]:
        data, ancdata, _, _ = self.sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4))
        fds = received_fds(ancdata)
        return (decode_reply(data) if data else None), fds

    def spawn(self, wire_id: int, log: Path) -> tuple[int, int, socket.socket]:
        """An echo worker: its pid, pidfd, and the gateway's end of its channel."""
        ours, theirs = socket.socketpair()
        work_dir = self.work_dir / f"w{wire_id}"
        work_dir.mkdir()
        env = build_worker_env(work_dir, pythonpath=str(PROJECT_ROOT))
        with theirs, log.open("ab") as err:
            self.send(
                SpawnRequest(wire_id, ECHO_ARGS, env, str(work_dir), True), [theirs.fileno(), err.fileno()]
            )
        message, fds = self.receive()
        assert isinstance(message, Spawned) and message.id == wire_id and len(fds) == 1, message
        return message.pid, fds[0], ours


def start_server(tmp: Path) -> Server:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs, (tmp / "server.log").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.forkserver", "--fd", str(theirs.fileno())],
            env={**build_worker_env(tmp, pythonpath=str(PROJECT_ROOT)), **SERVER_ENV},
            cwd=tmp,
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    ours.settimeout(120)
    server = Server(proc, ours, tmp)
    message, _ = server.receive()
    assert message == Ready(proc.pid), (tmp / "server.log").read_text()
    return server


def stop_server(server: Server) -> None:
    server.sock.close()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("forkserver"))
    yield running
    stop_server(running)


def socket_inodes(pid: int) -> set[str]:
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return {t for t in targets if t.startswith("socket:")}


def test_a_child_serves_and_holds_only_its_own_descriptors(server: Server, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    pid, pidfd, channel = server.spawn(1, log)
    try:
        with channel:
            frames = recv_frames(channel)
            ready = next(frames)
            assert (ready["type"], ready["pid"]) == ("ready", pid)
            layers = {layer["name"]: layer for layer in ready["isolation"]["layers"]}
            assert layers["descriptors"]["detail"] == "only the channel"  # nothing else was left open
            fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert sorted(fds) == [0, 1, 2, CHANNEL_FD]
            assert (fds[0], fds[1], fds[2]) == ("/dev/null", "/dev/null", str(log))
            assert not socket_inodes(pid) & socket_inodes(server.proc.pid)  # no control socket
            assert os.getsid(pid) == pid  # its own session
            send_frame(channel, {"type": "shutdown"})
            assert list(frames) == []
        message, _ = server.receive()
        assert message == Exited(pid, 0)
    finally:
        os.close(pidfd)
    assert "channel closed by the gateway" in log.read_text() or "shutdown requested" in log.read_text()


def test_signals_reach_the_child_through_its_pidfd_and_its_status_is_reported(
    server: Server, tmp_path: Path
) -> None:
    pid, pidfd, channel = server.spawn(2, tmp_path / "worker.log")
    with channel:
        assert next(recv_frames(channel))["type"] == "ready"
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        message, _ = server.receive()
    os.close(pidfd)
    assert message == Exited(pid, -signal.SIGKILL)


def test_bad_requests_are_refused_and_the_server_keeps_serving(server: Server, tmp_path: Path) -> None:
    with open(os.devnull) as null:
        server.sock.sendmsg(
            [b'{"op": "spawn", "id": 5, "argv": 1}'],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null.fileno()]))],
        )
        assert server.receive() == (Failed(5, "spawn request: argv must be a list of strings"), [])
        request = SpawnRequest(6, ECHO_ARGS, {}, str(tmp_path), True)  # says two descriptors
        server.send(request, [null.fileno()])
        message, _ = server.receive()
        assert isinstance(message, Failed) and message.id == 6 and "descriptor" in message.message
    pid, pidfd, channel = server.spawn(7, tmp_path / "worker.log")
    with channel:
        assert next(recv_frames(channel))["type"] == "ready"
    assert server.receive()[0] == Exited(pid, 0)
    os.close(pidfd)


def test_the_server_exits_when_the_gateway_goes_and_its_child_when_its_channel_closes(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    pid, pidfd, channel = server.spawn(1, tmp_path / "worker.log")
    try:
        with channel:
            assert next(recv_frames(channel))["type"] == "ready"
            stop_server(server)  # the control socket closes: the server exits at once
            assert server.proc.returncode == 0
            time.sleep(0.2)
            os.kill(pid, 0)  # its child still runs: its channel is open
        deadline = time.monotonic() + 30
        while not _ended(pidfd):
            assert time.monotonic() < deadline, "the orphaned worker did not exit when its channel closed"
            time.sleep(0.05)
    finally:
        os.close(pidfd)


def _ended(pidfd: int) -> bool:
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def test_a_process_with_a_second_thread_is_not_fit_to_fork() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        hazard = fork_hazard()
    finally:
        stop.set()
        thread.join()
    assert hazard is not None and "threads are running" in hazard


def test_the_preload_leaves_the_policy_engine_out_and_no_thread_running(tmp_path: Path) -> None:
    # regopy and torch in one process abort it: the fork server must never import the policy side.
    code = (
        "import json, sys\n"
        "from sandbox.forkserver import fork_hazard, preload\n"
        "preload()\n"
        "print(json.dumps([fork_hazard(), sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('gateway', 'regopy'))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**build_worker_env(tmp_path, pythonpath=str(PROJECT_ROOT)), **SERVER_ENV},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    hazard, modules = json.loads(out.stdout.splitlines()[-1])
    assert hazard is None
    assert "regopy" not in modules and not [m for m in modules if m.startswith("gateway.policy")], modules
