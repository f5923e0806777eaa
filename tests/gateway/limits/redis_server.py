"""A real, throwaway ``redis-server`` on a free loopback port (no persistence), for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

INSTALL_HINT = (
    "redis-server is not installed or not on PATH; the Redis limit-store tests need a real one. "
    "Install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)."
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer(binary, workdir) as server:`` starts it and waits for PING."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        with self.client() as probe:
            while True:
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                    raise RuntimeError(
                        f"redis-server exited at start (code {self._process.returncode}): {err}"
                    )
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer PING within {timeout_s} s")
                time.sleep(0.01)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def running_redis(workdir: Path) -> RedisServer:
    """A server to use in a ``with`` block; fails the test (never skips) without redis-server."""
    binary = redis_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return RedisServer(binary, workdir)
