"""A real gateway: `llmos serve` as a subprocess (uvicorn + a real model worker) on a free port.

The server runs on its embedded defaults over a fresh $LLMOS_HOME, exactly like the README's
quick start; the admin key is read from its stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

LLMOS = str(Path(sys.executable).with_name("llmos"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    home: Path
    base_url: str
    admin_key: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _clients: dict[str, openai.OpenAI] = field(default_factory=dict)
    exit_code: int | None = None
    ca: Path | None = None  # served over HTTPS with a certificate from this CA

    def env(self) -> dict[str, str]:
        return {**os.environ, "LLMOS_HOME": str(self.home)}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LLMOS, *args], env=self.env(), capture_output=True, text=True, timeout=120, check=check
        )

    def create_key(self, name: str, role: str = "user", *extra: str) -> str:
        out = self.cli("keys", "create", "--name", name, "--role", role, "--tenant", "acme", *extra)
        return out.stdout.strip()

    def client(self, key: str | None = None) -> openai.OpenAI:
        """An official openai client (no retries); one per key, closed at the end of the session."""
        key = key or self.admin_key
        if key not in self._clients:
            self._clients[key] = openai.OpenAI(
                base_url=self.base_url + "/v1", api_key=key, max_retries=0, timeout=60
            )
        return self._clients[key]

    def close_clients(self) -> None:
        for c in self._clients.values():
            c.close()

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "sandbox.worker" in cmd and str(self.home) in cmd:
                pids.append(int(entry.name))
        return pids

    def wait_listening(self, timeout: float = 180) -> None:
        self._wait(timeout, lambda r: True, "/healthz")

    def wait_model(self, model: str, timeout: float = 180) -> None:
        """Until ``model``'s worker is ready (other models may not be)."""
        self._wait(timeout, lambda r: r.json()["models"].get(model) == "ready", "/readyz")

    def _wait(self, timeout: float, done: Callable[[httpx.Response], bool], path: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_path.read_text()}")
            try:
                if done(httpx.get(self.base_url + path, timeout=2)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready in {timeout}s:\n{self.log_path.read_text()}")

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_path.read_text()}")
            try:
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=str(self.ca)) if self.ca is not None else True
                )
                if httpx.get(self.base_url + "/readyz", timeout=2, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready in {timeout}s:\n{self.log_path.read_text()}")


@contextmanager
def serve_config(
    config: Path, port: int, home: Path, *, ca: Path | None = None, wait: bool = True
) -> Iterator[Gateway]:
    """`llmos serve --config config` (which listens on ``port`` over state dir ``home``), ready
    (every model; with ``wait=False`` only listening); stopped with SIGTERM on exit.
    ``gateway.exit_code`` then holds its exit status. With ``ca``, the gateway serves HTTPS with
    a certificate that CA issued."""
    log_path = config.parent / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([LLMOS, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    key = proc.stdout.readline().decode().strip()
    scheme = "https" if ca is not None else "http"
    gw = Gateway(
        home=home, base_url=f"{scheme}://127.0.0.1:{port}", admin_key=key, proc=proc, log_path=log_path, ca=ca
    )
    try:
        if wait:
            gw.wait_ready()
        else:
            gw.wait_listening()
        yield gw
    finally:
        gw.close_clients()
        proc.send_signal(signal.SIGTERM)
        try:
            gw.exit_code = proc.wait(timeout=30)
        finally:
            proc.stdout.close()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    log_path = root / "server.log"
    port = free_port()
    env = {**os.environ, "LLMOS_HOME": str(home)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [LLMOS, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=log
        )
    assert proc.stdout is not None
    admin_key = proc.stdout.readline().decode().strip()
    gw = Gateway(
        home=home, base_url=f"http://127.0.0.1:{port}", admin_key=admin_key, proc=proc, log_path=log_path
    )
    try:
        assert admin_key.startswith("sk-llmos-"), log_path.read_text()
        gw.wait_ready()
        yield gw
    finally:
        gw.close_clients()
        proc.stdout.close()
        terminate(proc)


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 30 s; nothing if it has exited already."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- explanation records (docs/explanations.md) ----------------------------------------------

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def explaining_policies(root: Path, level: str = "summary") -> Path:
    """A copy of the default policies under ``root`` whose data asks for explanations at
    ``level`` (the configuration line ``policy: {dir: policies, ...}`` points at it)."""
    policies = root / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("__*"))
    data = json.loads((policies / "data.json").read_text())
    data["llmos"]["config"]["explain"] = level
    (policies / "data.json").write_text(json.dumps(data))
    return policies


def fetch(gw: Gateway, request_id: str, key: str | None = None, **params: str) -> httpx.Response:
    with gw.http() as http:
        return http.get(
            f"/v1/explanations/{request_id}",
            params=params,
            headers={"authorization": f"Bearer {key or gw.admin_key}"},
        )


def wait_record(gw: Gateway, request_id: str, key: str | None = None) -> dict[str, Any]:
    """The request's explanation record once it is stored and committed by its audit entry
    (which rides on a later group commit: up to gateway.audit.log.LAZY_WAIT_S after)."""
    deadline = time.monotonic() + 60
    while True:
        r = fetch(gw, request_id, key)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            if body["audit"]["committed"]:
                return body
        else:
            assert r.status_code == 404, r.text
        assert time.monotonic() < deadline, f"no explanation for {request_id}"
        time.sleep(0.1)
