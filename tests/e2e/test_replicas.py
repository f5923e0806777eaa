"""A model with three replicas behind a real gateway: three sandboxed worker processes, requests
spread over them by least outstanding, a killed replica's traffic taken by the others while it
restarts, and the replicas visible in /admin/models, /admin/workers and `llmos models status`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import LLMOS, Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e
MiB = 2**20
REPLICAS = 3


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("replicas")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        f"devices: {{cpu_budget_bytes: {1000 * MiB}}}\n"
        "pii: {detector: patterns}\n"
        "workers: {restart_backoff_initial_s: 0.2}\n"
        f"models:\n  - {{name: wide, kind: echo, replicas: {REPLICAS}, memory_bytes: {100 * MiB}}}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def admin_get(gateway: Gateway, path: str) -> dict[str, Any]:
    with gateway.http() as http:
        r = http.get(path, headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def ask(gateway: Gateway, text: str) -> str:
    reply = gateway.client().chat.completions.create(
        model="wide", messages=[{"role": "user", "content": text}], max_tokens=16
    )
    return reply.choices[0].message.content or ""


def replica_pids(gateway: Gateway) -> list[int]:
    replicas = admin_get(gateway, "/admin/workers")["workers"]["wide"]["replicas"]
    return [r["pid"] for r in replicas]


def test_three_replicas_run_as_three_workers_and_count_their_memory(replicated: Gateway) -> None:
    status = admin_get(replicated, "/admin/models")
    model = status["models"]["wide"]
    assert model["replicas"] == model["replicas_configured"] == REPLICAS
    assert [r["state"] for r in model["replica_status"]] == ["ready"] * REPLICAS
    assert status["devices"][0]["used_bytes"] == REPLICAS * 100 * MiB
    pids = replica_pids(replicated)
    assert len(set(pids)) == REPLICAS and all(pids)
    for pid in pids:  # each one a sandboxed worker process of this gateway
        assert f"PPid:\t{replicated.proc.pid}\n" in Path(f"/proc/{pid}/status").read_text()


def test_concurrent_requests_are_all_answered(replicated: Gateway) -> None:
    texts = [f"hello {n}" for n in range(48)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda t: ask(replicated, t), texts))
    assert answers == texts
    model = admin_get(replicated, "/admin/models")["models"]["wide"]
    assert [r["outstanding"] for r in model["replica_status"]] == [0] * REPLICAS


def test_a_killed_replica_restarts_while_the_others_serve(replicated: Gateway) -> None:
    before = replica_pids(replicated)
    os.kill(before[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # once the gateway noticed (a request sent in between fails)
        now = admin_get(replicated, "/admin/workers")["workers"]["wide"]["replicas"][1]
        if now["state"] != "ready" or now["pid"] != before[1]:
            break
        time.sleep(0.01)
    for n in range(20):  # the others answer at once while replica 1 restarts
        assert ask(replicated, f"still {n}") == f"still {n}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = admin_get(replicated, "/admin/workers")["workers"]["wide"]["replicas"]
        if workers[1]["state"] == "ready" and workers[1]["pid"] != before[1]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"replica 1 did not come back: {workers}")
    after = replica_pids(replicated)
    assert after[0] == before[0] and after[2] == before[2] and after[1] != before[1]
    assert workers[1]["restarts"] >= 1


def test_the_cli_status_shows_the_replicas(replicated: Gateway) -> None:
    env = {**replicated.env(), "LLMOS_API_KEY": replicated.admin_key}
    done = subprocess.run(
        [LLMOS, "models", "status", "--url", replicated.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"wide: ready pinned, 100 MiB per replica on cpu; replicas {REPLICAS}/{REPLICAS} (in flight 0, 0, 0)"
        in (done.stdout)
    )
