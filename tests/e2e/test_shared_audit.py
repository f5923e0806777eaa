"""Three gateway replicas share one audit log on a real PostgreSQL (audit.backend: postgres):
all three append while they answer; the replica holding the integrator lease is SIGKILLed
under load; another takes over; `llmos audit verify` then checks the whole log, and every
request that was answered 200 has its entry in it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.audit.keys import generate_signing_key
from gateway.audit.shared import LEASE_KEY
from gateway.audit.store import AuditStore
from tests.e2e.conftest import LLMOS, Gateway, free_port, serve_config
from tests.pgserver import PgServer, bindir, pg_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(bindir() is None, reason="PostgreSQL is not installed (make services)"),
]

ORIGIN = "e2e.shared/audit"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with pg_server(port=55434) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gateway]]:
    shared = tmp_path_factory.mktemp("shared")
    dsn_file = shared / "audit.dsn"
    dsn_file.write_text(pg.dsn + "\n")
    dsn_file.chmod(0o600)
    generate_signing_key(shared / "audit.key", shared / "audit.pub")  # one log, one key
    with ExitStack() as stack:
        gateways = []
        for name in ("a", "b", "c"):
            root = tmp_path_factory.mktemp(f"gateway-{name}")
            port = free_port()
            config = root / "llmos.yaml"
            config.write_text(
                f"state_dir: state\nserver: {{port: {port}}}\npii: {{detector: patterns}}\n"
                f"audit:\n  backend: postgres\n  postgres_dsn_file: {dsn_file}\n"
                f"  signing_key: {shared / 'audit.key'}\n  public_key: {shared / 'audit.pub'}\n"
                f"  origin: {ORIGIN}\n  checkpoint_interval_s: 0.5\n"
                "models:\n  - {name: echo, kind: echo}\n"
            )
            gateways.append(stack.enter_context(serve_config(config, port, root / "state")))
        yield gateways


def ask(gateway: Gateway, text: str) -> str | None:
    """The request id of a 200 answer, else None (refused, or the gateway is gone)."""
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
            r = http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {gateway.admin_key}"},
                json={"model": "echo", "messages": [{"role": "user", "content": text}]},
            )
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    assert r.json()["choices"][0]["message"]["content"] == text
    return r.headers["x-request-id"]


def integrator_pid(dsn: str) -> int | None:
    """The process that holds the integrator lease (its session's application_name)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = (%s::bigint & 4294967295)::oid",
            (LEASE_KEY,),
        ).fetchone()
    return None if row is None else int(row[0].rsplit(" ", 1)[1])


def pending(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_shared WHERE seq IS NULL").fetchone()[0])


def wait_until(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_three_replicas_share_one_log_that_verifies_after_its_integrator_is_killed(
    replicas: list[Gateway], pg: PgServer, tmp_path: Path
) -> None:
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(gateway: Gateway, tag: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            request_id = ask(gateway, f"{tag} {n}")
            if request_id is not None:
                with lock:
                    answered.append(request_id)

    threads = [
        threading.Thread(target=load, args=(gw, f"{name}{k}"))
        for gw, name in zip(replicas, "abc", strict=True)
        for k in range(2)
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answered) >= 60 and integrator_pid(pg.dsn) is not None)
        holder = integrator_pid(pg.dsn)
        victim = next(gw for gw in replicas if gw.proc.pid == holder)
        os.kill(victim.proc.pid, signal.SIGKILL)  # the integrator dies mid-load
        victim.proc.wait(timeout=30)
        before = len(answered)
        wait_until(lambda: integrator_pid(pg.dsn) not in (None, holder))  # another takes over
        wait_until(lambda: len(answered) >= before + 60)  # and the survivors go on answering
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    wait_until(lambda: pending(pg.dsn) == 0)

    survivor = next(gw for gw in replicas if gw.proc.poll() is None)
    config = survivor.home.parent / "llmos.yaml"
    verified = subprocess.run(
        [LLMOS, "audit", "verify", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK: ") and f"origin {ORIGIN}" in verified.stdout

    checkpoint = subprocess.run(
        [LLMOS, "audit", "checkpoint", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert checkpoint.returncode == 0 and checkpoint.stdout.startswith(f"{ORIGIN}\n"), checkpoint.stderr

    out = tmp_path / "pulled.db"
    pulled = subprocess.run(
        [LLMOS, "audit", "pull", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pulled.returncode == 0, pulled.stderr
    with AuditStore.open_readonly(out) as store:
        entries = list(store.iter_entries())
    logged = {e.request_id for e in entries}
    assert set(answered) <= logged  # every answered request is in the log, durable before its answer
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))  # no gap
    # The successor took over a log the victim had been extending, not an empty one.
    successor = next(gw for gw in replicas if gw.proc.pid == integrator_pid(pg.dsn))
    took_over = re.findall(r"integrates the shared log from seq (\d+)", successor.log_path.read_text())
    assert took_over and int(took_over[-1]) > 0
