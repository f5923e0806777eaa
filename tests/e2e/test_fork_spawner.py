"""The gateway with ``workers.spawner: fork_server``: the demo transformers model's worker is
forked from the fork server (not exec'd by the gateway), is isolated like an exec'd one, serves
the openai client, and comes back quickly after a crash; the fork server goes with the gateway."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fork")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "pii: {detector: patterns}\n"
        "workers: {spawner: fork_server, restart_backoff_initial_s: 0.1}\n"
    )  # no models: the demo transformers model
    with serve_config(config, port, root / "state") as gw:
        yield gw
        servers = _fork_servers(gw.proc.pid)
    assert gw.exit_code in (0, -signal.SIGTERM), gw.log_path.read_text()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers and not any(_alive(pid) for pid in servers), "the fork server outlived the gateway"


def _alive(pid: int) -> bool:
    try:
        return b"sandbox.forkserver" in _cmdline(pid) and "\nState:\tZ" not in _status(pid)
    except OSError:
        return False


def _status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _fork_servers(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"\nPPid:\t{parent}\n" in _status(int(entry.name)) and b"sandbox.forkserver" in _cmdline(
                    int(entry.name)
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def demo_worker(gateway: Gateway) -> dict[str, Any]:
    with gateway.http() as http:
        r = http.get("/admin/workers", headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200, r.text
        worker: dict[str, Any] = r.json()["workers"]["demo"]
        return worker


def ask(gateway: Gateway) -> str:
    reply = gateway.client().chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0
    )
    return reply.choices[0].message.content or ""


def test_the_worker_is_forked_from_the_fork_server_and_isolated(forked: Gateway) -> None:
    worker = demo_worker(forked)
    assert worker["state"] == "ready"
    servers = _fork_servers(forked.proc.pid)
    assert len(servers) == 1, "one fork server, started by the gateway"
    assert f"\nPPid:\t{servers[0]}\n" in _status(worker["pid"]), "the worker is the fork server's child"
    layers = {layer["name"]: layer for layer in worker["isolation"]["layers"]}
    assert layers["network"]["applied"] and layers["seccomp"]["applied"] and layers["filesystem"]["applied"]
    assert ask(forked) == ask(forked)  # greedy: the same answer twice


def test_a_crashed_forked_worker_is_restarted_from_the_fork_server(forked: Gateway) -> None:
    before = demo_worker(forked)
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = demo_worker(forked)
        if now["state"] == "ready" and now["pid"] != before["pid"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker did not come back: {now}")
    assert now["restarts"] > before["restarts"]
    assert ask(forked)
