"""A gateway whose model runs on two worker hosts (`llmos worker serve`) over mutual TLS: the
official openai client gets answers, JSON and stream; a worker host SIGKILLed moves the
traffic to the other; one with a certificate the gateway does not trust is never used."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LLMOS, Gateway, free_port, serve_config, terminate
from tests.gateway.certs import Issued, TestCa

pytestmark = pytest.mark.e2e


@contextmanager
def worker_host(root: Path, cert: Issued, gateway_ca: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`llmos worker serve` with an echo model on a free port, until it says it serves."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        "state_dir: state\nmodels:\n  - {name: echo, kind: echo}\n"
        f"worker_host: {{cert_file: {cert.cert}, key_file: {cert.key}, gateway_ca_file: {gateway_ca}}}\n"
    )
    log = (root / "host.log").open("w")
    proc = subprocess.Popen(
        [LLMOS, "worker", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("llmos worker host serving echo"), (root / "host.log").read_text()
        yield proc, port
    finally:
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


def remote_status(gateway: Gateway) -> list[dict[str, Any]]:
    with gateway.http() as http:
        r = http.get("/admin/workers", headers={"authorization": f"Bearer {gateway.admin_key}"})
    assert r.status_code == 200, r.text
    status: list[dict[str, Any]] = r.json()["workers"]["echo"]["remote"]
    return status


def wait_until(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, list[subprocess.Popen[str]]]]:
    root = tmp_path_factory.mktemp("remote")
    gateway_ca, worker_ca, rogue_ca = (
        TestCa(root / "gca", "gateway CA"),
        TestCa(root / "wca", "worker CA"),
        TestCa(root / "rca", "rogue CA"),
    )
    gateway_cert = gateway_ca.issue("gateway", "gateway-1")
    with ExitStack() as stack:
        hosts = [
            stack.enter_context(
                worker_host(
                    root / f"host{n}",
                    worker_ca.issue(f"w{n}", f"worker-{n}", server=True, dns=("llmos-worker",)),
                    gateway_ca.cert_path,
                )
            )
            for n in (1, 2)
        ]
        rogue = stack.enter_context(
            worker_host(
                root / "rogue",
                rogue_ca.issue("r", "worker-r", server=True, dns=("llmos-worker",)),
                gateway_ca.cert_path,
            )
        )
        port = free_port()
        endpoints = ", ".join(f"127.0.0.1:{p}" for _, p in (*hosts, rogue))
        config = root / "gateway" / "llmos.yaml"
        config.parent.mkdir()
        config.write_text(
            f"state_dir: state\nserver: {{port: {port}}}\npii: {{detector: patterns}}\n"
            "models:\n  - name: echo\n    kind: remote\n    remote:\n"
            f"      endpoints: [{endpoints}]\n      server_name: llmos-worker\n"
            f"      cert_file: {gateway_cert.cert}\n      key_file: {gateway_cert.key}\n"
            f"      ca_file: {worker_ca.cert_path}\n"
            "      health_interval_s: 0.2\n      health_timeout_s: 1\n      eject_backoff_max_s: 1\n"
        )
        gateway = stack.enter_context(serve_config(config, port, config.parent / "state"))
        wait_until(lambda: [s["state"] for s in remote_status(gateway)][:2] == ["ready", "ready"])
        yield gateway, [proc for proc, _ in hosts]


def test_the_openai_client_is_answered_by_remote_workers(cluster: tuple[Gateway, list[Any]]) -> None:
    gateway, _ = cluster
    client = gateway.client()
    reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "over mTLS"}])
    assert reply.choices[0].message.content == "over mTLS"
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "streamed over mTLS"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed over mTLS"


def test_a_worker_host_the_gateway_does_not_trust_is_never_used(cluster: tuple[Gateway, list[Any]]) -> None:
    gateway, _ = cluster
    rogue = remote_status(gateway)[2]
    assert rogue["state"] != "ready"
    assert "CERTIFICATE_VERIFY_FAILED" in (rogue["last_error"] or "")


def test_a_killed_worker_host_moves_the_traffic_to_the_other(cluster: tuple[Gateway, list[Any]]) -> None:
    gateway, hosts = cluster
    hosts[0].send_signal(signal.SIGKILL)
    hosts[0].wait(timeout=30)
    wait_until(lambda: remote_status(gateway)[0]["state"] != "ready")
    client = gateway.client()
    for n in range(6):
        reply = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": f"still {n}"}]
        )
        assert reply.choices[0].message.content == f"still {n}"
    status = remote_status(gateway)
    assert status[1]["state"] == "ready" and status[0]["ejections"] == 1
    with httpx.Client(base_url=gateway.base_url, timeout=30) as http:  # the gateway itself stays ready
        assert http.get("/readyz").status_code == 200
