"""Spawning workers through the fork server: the gateway's side of ``sandbox.forkserver``.

``fork_server(python)`` is the process-wide ``ForkServer`` for an interpreter. It starts its
server process on the first spawn (with a worker's clean environment and its own temp dir) and
starts a new one on the next spawn after the last died. ``ForkServer.spawn`` passes the worker's
arguments, environment, cwd, channel and log descriptors (``sandbox.forkproto``) and returns a
``ForkedProcess``: what ``WorkerProcess`` keeps as its process (``WorkerHandle``, the part of
``asyncio.subprocess.Process`` the supervisor uses).

Supervision does not depend on the fork server staying up. Each ``ForkedProcess`` holds the
child's pidfd: signals go through it (never to a reused pid), and it tells when the child ended.
The exit status comes from the server, which reaps the child; when the server is gone first,
``wait()`` resolves once the pidfd says the child ended, with ``EXIT_STATUS_UNKNOWN`` (its new
parent reaped it).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from gateway.errors import ForkServerError
from sandbox.events import EXIT_STATUS_UNKNOWN
from sandbox.forkproto import (
    MAX_MESSAGE,
    Exited,
    Failed,
    Ready,
    Spawned,
    SpawnRequest,
    decode_reply,
    received_fds,
)
from sandbox.isolation import build_worker_env

log = logging.getLogger("llmos.sandbox")

SpawnerKind = Literal["exec", "fork_server"]

# Besides a worker's environment, for the server only (a child gets the request's): one BLAS
# thread, or numpy's OpenBLAS starts a pool at import; NVML instead of a CUDA init for
# torch.cuda.is_available(), which a forked child could not undo.
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1", "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


class WorkerHandle(Protocol):
    """A running worker as the supervisor sees it (``asyncio.subprocess.Process`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int, /) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """A worker forked by the fork server, watched through its pidfd."""

    def __init__(self, pid: int, pidfd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._pid = pid
        self._pidfd: int | None = pidfd
        self._loop = loop
        self._ended = False  # the pidfd says it exited; the status may still be on its way
        self._server_gone = False
        self._done: asyncio.Future[int] = loop.create_future()
        loop.add_reader(pidfd, self._on_pidfd)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._done.result() if self._done.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int, /) -> None:
        if self._pidfd is None:
            raise ProcessLookupError(f"worker pid {self._pid} has exited")
        signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    # -- fed by the connection -----------------------------------------------------------------

    def exited(self, returncode: int) -> None:
        """The server reaped it."""
        self._finish(returncode)

    def server_gone(self) -> None:
        """No status will come: resolve when the pidfd says it ended (maybe already)."""
        self._server_gone = True
        if self._ended:
            self._finish(EXIT_STATUS_UNKNOWN)

    def abandon(self) -> None:
        """Its event loop is closed: let go of the pidfd."""
        self._release()

    def _on_pidfd(self) -> None:
        self._ended = True
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
        if self._server_gone:
            self._finish(EXIT_STATUS_UNKNOWN)

    def _finish(self, returncode: int) -> None:
        self._release()
        if not self._done.done():
            self._done.set_result(returncode)

    def _release(self) -> None:
        if self._pidfd is not None:
            if not self._ended and not self._loop.is_closed():
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class _Connection:
    """One fork server process and its control socket, read on one event loop at a time."""

    def __init__(self, python: str, log_path: Path | None, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dead = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._ids = itertools.count(1)
        self.work_dir = Path(tempfile.mkdtemp(prefix="llmos-forkserver-"))
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = {**build_worker_env(self.work_dir, pythonpath=_project_root()), **SERVER_ENV}
            with contextlib.ExitStack() as stack:
                stderr = subprocess.DEVNULL if log_path is None else stack.enter_context(log_path.open("ab"))
                self.proc = subprocess.Popen(
                    [python, "-m", "sandbox.forkserver", "--fd", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env=env,
                    cwd=self.work_dir,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except BaseException as exc:
            self.sock.close()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            if isinstance(exc, OSError):
                raise ForkServerError(f"could not start the worker fork server ({python}): {exc}") from exc
            raise
        finally:
            theirs.close()
        self.reaper = threading.Thread(target=self._reap, name="llmos-forkserver-reaper", daemon=True)
        self.sock.setblocking(False)
        loop.add_reader(self.sock, self._on_readable)
        log.info("worker fork server started (pid %d)", self.proc.pid)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read on ``loop`` from now on; the previous loop is closed, and its workers with it."""
        with contextlib.suppress(RuntimeError):
            self.loop.remove_reader(self.sock)
        for child in self._children.values():
            child.abandon()
        self._children.clear()
        self.loop = loop
        if not self.ready.done():  # never seen ready: start over rather than guess
            self.close("was abandoned while starting (its event loop closed)")
            return
        self.ready = loop.create_future()
        self.ready.set_result(None)
        loop.add_reader(self.sock, self._on_readable)

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, fds: Sequence[int], *, stderr: bool
    ) -> ForkedProcess:
        wire_id = next(self._ids)
        data = SpawnRequest(wire_id, tuple(argv), dict(env), str(cwd), stderr).encode()
        reply = self._pending[wire_id] = self.loop.create_future()
        try:
            await self._send(data, fds)
            return await reply
        finally:
            self._pending.pop(wire_id, None)

    def close(self, reason: str) -> None:
        """Close the control socket (the server exits on EOF) and fail what waits on it."""
        if self.dead:
            return
        self.dead = True
        if not self.loop.is_closed():
            self.loop.remove_reader(self.sock)
        self.sock.close()
        error = ForkServerError(f"the worker fork server (pid {self.proc.pid}) {reason}")
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(error)
        for child in self._children.values():
            child.server_gone()
        self._children.clear()
        self.reaper.start()

    def _reap(self) -> None:
        """In a thread: collect the server (it exits on EOF; killed if it has not in 10 s)."""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    async def _send(self, data: bytes, fds: Sequence[int]) -> None:
        ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        while True:
            if self.dead:
                raise ForkServerError("the worker fork server is gone")
            try:
                self.sock.sendmsg([data], ancdata)
                return
            except BlockingIOError:
                writable: asyncio.Future[None] = self.loop.create_future()
                self.loop.add_writer(self.sock, _resolve, writable)
                try:
                    await writable
                finally:
                    self.loop.remove_writer(self.sock)
            except OSError as exc:
                self.close(f"cannot be reached ({exc})")
                raise ForkServerError(f"the worker fork server is gone ({exc})") from exc

    def _on_readable(self) -> None:
        while not self.dead:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(
                    MAX_MESSAGE, socket.CMSG_SPACE(4), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(f"failed: {exc}")
                return
            fds = received_fds(ancdata)
            if not data and not fds:
                self.close("exited")
                return
            try:
                self._dispatch(data, fds)
            except ForkServerError as exc:
                for fd in fds:
                    os.close(fd)
                log.error("worker fork server: %s; stopping it", exc)
                self.proc.kill()
                self.close("sent an unreadable message")

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        message = decode_reply(data)
        if isinstance(message, Ready) and not self.ready.done():
            self.ready.set_result(None)
        elif isinstance(message, Spawned) and len(fds) == 1:
            reply = self._pending.get(message.id)
            if reply is None or reply.done():  # the spawn was cancelled: its channel closes, it exits
                os.close(fds[0])
                return
            child = self._children[message.pid] = ForkedProcess(message.pid, fds[0], self.loop)
            reply.set_result(child)
        elif isinstance(message, Failed):
            error = ForkServerError(message.message)
            target = self.ready if message.id == 0 else self._pending.get(message.id)
            if target is not None and not target.done():
                target.set_exception(error)
        elif isinstance(message, Exited):
            exited = self._children.pop(message.pid, None)
            if exited is not None:
                exited.exited(message.returncode)
        else:
            raise ForkServerError(f"unexpected message {message!r} with {len(fds)} descriptor(s)")


class ForkServer:
    """The fork server of one interpreter: started on demand, restarted after it died."""

    def __init__(self, python: str, log_path: Path | None = None) -> None:
        self.python = python
        self.log_path = log_path
        self._conn: _Connection | None = None

    @property
    def pid(self) -> int | None:
        conn = self._conn
        return conn.proc.pid if conn is not None and not conn.dead else None

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        channel: int,
        stderr: int | None,
        timeout: float,
    ) -> ForkedProcess:
        """Fork a worker running ``sandbox.worker`` with ``argv`` (its ``--fd`` must be
        ``forkproto.CHANNEL_FD``); ForkServerError when the server cannot start or fork."""
        conn = self._connection()
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
        except TimeoutError:
            conn.proc.kill()
            conn.close(f"was not ready within {timeout:g} s")
            raise ForkServerError(f"the worker fork server was not ready within {timeout:g} s") from None
        fds = (channel,) if stderr is None else (channel, stderr)
        return await asyncio.wait_for(conn.spawn(argv, env, cwd, fds, stderr=stderr is not None), timeout)

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and not conn.dead and conn.loop is not loop:
            conn.attach(loop)
        if conn is None or conn.dead:
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn = _Connection(self.python, self.log_path, loop)
        return conn

    async def close(self) -> None:
        """Stop the server (its workers keep running until their channels close)."""
        conn, self._conn = self._conn, None
        if conn is None or conn.dead:
            return
        loop = asyncio.get_running_loop()
        if conn.loop is not loop:
            conn.attach(loop)
        conn.close("was closed")
        await asyncio.to_thread(conn.reaper.join)


_SERVERS: dict[str, ForkServer] = {}


def fork_server(python: str, log_path: Path | None = None) -> ForkServer:
    """The shared fork server for ``python`` (created on first use; ``log_path`` gets its stderr)."""
    server = _SERVERS.get(python)
    if server is None:
        server = _SERVERS[python] = ForkServer(python, log_path)
    return server


async def close_fork_servers() -> None:
    """Stop every shared fork server (at gateway shutdown; workers stop on their own)."""
    for server in list(_SERVERS.values()):
        await server.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)
