"""Three hosts on one machine, with network namespaces: a gateway host and two worker hosts,
each with its own address, joined by veth links. Requests reach the demo model on the worker
hosts over mutual TLS; cutting one worker host's link (a partition: no connection is closed)
fails only the requests in flight there, with 503, and moves the traffic to the other.

Needs root and iproute2 (`ip netns`); skipped elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LLMOS, terminate
from tests.gateway.certs import TestCa

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"),
]

TAG = f"{os.getpid() % 100000}"
GW, W1, W2 = f"llgw{TAG}", f"llw1{TAG}", f"llw2{TAG}"
GATEWAY_ADDRESS = "10.77.0.2"  # the gateway host, as the test (the "client network") reaches it
WORKER_ADDRESSES = {W1: "10.77.1.2", W2: "10.77.2.2"}
LONG = 400  # tokens: a request the demo model takes seconds to answer


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@contextmanager
def namespaces() -> Iterator[None]:
    """gateway ns <-veth-> each worker ns; the root ns <-veth-> gateway ns (for the client)."""
    try:
        for ns in (GW, W1, W2):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        links = [
            ("c", None, "10.77.0.1", GW, GATEWAY_ADDRESS),
            ("a", GW, "10.77.1.1", W1, WORKER_ADDRESSES[W1]),
        ]
        links.append(("b", GW, "10.77.2.1", W2, WORKER_ADDRESSES[W2]))
        for name, left_ns, left_ip, right_ns, right_ip in links:
            left, right = f"ll{name}{TAG}x", f"ll{name}{TAG}y"
            sh("ip", "link", "add", left, "type", "veth", "peer", "name", right)
            if left_ns is not None:
                sh("ip", "link", "set", left, "netns", left_ns)
            sh("ip", "link", "set", right, "netns", right_ns)
            where = [] if left_ns is None else ["-n", left_ns]
            sh("ip", *where, "addr", "add", f"{left_ip}/24", "dev", left)
            sh("ip", *where, "link", "set", left, "up")
            sh("ip", "-n", right_ns, "addr", "add", f"{right_ip}/24", "dev", right)
            sh("ip", "-n", right_ns, "link", "set", right, "up")
        yield
    finally:
        for ns in (GW, W1, W2):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", f"llc{TAG}x"], capture_output=True, timeout=30)


@contextmanager
def process(
    ns: str, args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    try:
        yield proc
    finally:
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Hosts:
    base_url: str
    admin_key: str
    root: Path

    def remote_status(self) -> list[dict[str, Any]]:
        r = httpx.get(
            self.base_url + "/admin/workers",
            headers={"authorization": f"Bearer {self.admin_key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        status: list[dict[str, Any]] = r.json()["workers"]["demo"]["remote"]
        return status

    def ask(self, max_tokens: int = 8) -> httpx.Response:
        return httpx.post(
            self.base_url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {self.admin_key}"},
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": max_tokens,
                "temperature": 0,
            },
            timeout=120,
        )


def wait_until(condition: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("multihost")
    gateway_ca, worker_ca = TestCa(root / "gca", "gateway CA"), TestCa(root / "wca", "worker CA")
    gateway_cert = gateway_ca.issue("gateway", "gateway-1")
    with ExitStack() as stack:
        stack.enter_context(namespaces())
        for ns in (W1, W2):
            home = root / ns
            home.mkdir()
            cert = worker_ca.issue(ns, ns, server=True, dns=("llmos-worker",))
            config = home / "llmos.yaml"  # the default models: the demo model, signed at init
            config.write_text(
                f"state_dir: state\nworker_host: {{cert_file: {cert.cert}, key_file: {cert.key},"
                f" gateway_ca_file: {gateway_ca.cert_path}}}\n"
            )
            sh(LLMOS, "init", "--config", str(config), "--no-admin-key")
            host = stack.enter_context(
                process(
                    ns,
                    [
                        LLMOS,
                        "worker",
                        "serve",
                        "--config",
                        str(config),
                        "--listen",
                        f"{WORKER_ADDRESSES[ns]}:7443",
                    ],
                    home / "host.log",
                )
            )
            assert host.stdout is not None
            assert host.stdout.readline().startswith("llmos worker host serving demo"), (
                home / "host.log"
            ).read_text()
        home = root / "gateway"
        home.mkdir()
        config = home / "llmos.yaml"
        endpoints = ", ".join(f"{a}:7443" for a in WORKER_ADDRESSES.values())
        config.write_text(
            f"state_dir: state\nserver: {{host: {GATEWAY_ADDRESS}, port: 8080}}\npii: {{detector: patterns}}\n"
            "models:\n  - name: demo\n    kind: remote\n    remote:\n"
            f"      endpoints: [{endpoints}]\n      server_name: llmos-worker\n"
            f"      cert_file: {gateway_cert.cert}\n      key_file: {gateway_cert.key}\n      ca_file: {worker_ca.cert_path}\n"
            "      health_interval_s: 0.3\n      health_timeout_s: 1\n      eject_backoff_max_s: 1\n"
        )
        gateway = stack.enter_context(
            process(GW, [LLMOS, "serve", "--config", str(config)], home / "server.log")
        )
        assert gateway.stdout is not None
        key = gateway.stdout.readline().strip()
        assert key.startswith("sk-llmos-"), (home / "server.log").read_text()
        h = Hosts(f"http://{GATEWAY_ADDRESS}:8080", key, root)
        wait_until(lambda: _ready(h) == 2)
        yield h


def _ready(h: Hosts) -> int:
    try:
        return sum(s["state"] == "ready" for s in h.remote_status())
    except httpx.HTTPError:
        return 0


def test_requests_cross_hosts_over_mtls(hosts: Hosts) -> None:
    replies = [hosts.ask() for _ in range(4)]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert all(r.json()["choices"][0]["message"]["content"] for r in replies)


def test_cutting_a_worker_host_off_fails_only_its_requests_and_moves_the_traffic(hosts: Hosts) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        in_flight = [pool.submit(hosts.ask, LONG) for _ in range(4)]
        wait_until(lambda: [s["outstanding"] for s in hosts.remote_status()] == [2, 2], timeout_s=30)
        sh("ip", "-n", GW, "link", "set", f"lla{TAG}x", "down")  # worker host 1 is cut off
        results = [f.result() for f in in_flight]
    failed = [r for r in results if r.status_code != 200]
    assert len(failed) == 2  # the two in flight on the lost host...
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "worker_host_lost" for r in failed)
    assert sum(r.status_code == 200 for r in results) == 2  # ...and only those
    status = hosts.remote_status()
    assert status[0]["state"] != "ready" and status[0]["ejections"] == 1 and status[1]["state"] == "ready"
    after = [hosts.ask() for _ in range(4)]  # the traffic moved to worker host 2
    assert [r.status_code for r in after] == [200] * 4
    sh("ip", "-n", GW, "link", "set", f"lla{TAG}x", "up")  # the link comes back: re-admitted
    wait_until(lambda: _ready(hosts) == 2, timeout_s=30)
