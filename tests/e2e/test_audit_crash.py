"""Crash safety of the audit log: ``kill -9`` the gateway under sustained load.

Every request the gateway acknowledged (a 200 the client received) has its entry in the log: a
``complete`` entry for a plain chat, at least the ``stream_start`` entry for a stream, since the
gateway writes them before the response's first byte. After the crash the log verifies offline;
the gateway restarts on it (the log reopens, same origin), serves, stops cleanly, and the log
verifies again with more signed checkpoints.

The model is the echo model and the PII detector the pattern one, so the gateway starts fast.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import LLMOS, Gateway, free_port

pytestmark = pytest.mark.e2e

CLIENTS = 8
LOAD_BEFORE_KILL_S = 2.5
CHECKPOINT_EVERY = 50
LONG_STREAM_TOKENS = 4000  # under the default policy's max_tokens limit (4096)
AFTER_RESTART = 60  # requests after the restart: more than CHECKPOINT_EVERY entries
VERIFIED = re.compile(
    r"^OK: (\d+) entries verified; .* (\d+) signed checkpoints and the signed head \(origin (\S+)\);", re.M
)


@dataclass
class Load:
    """What the client threads saw: acknowledged (request id, phase) pairs, and failures."""

    acked: list[tuple[str, str]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # non-200 statuses, before the kill
    cut_off: int = 0  # requests in flight when the gateway was killed
    unexpected: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _pids_with_parent(parent: int) -> list[int]:
    """Live ``sandbox.worker`` processes whose parent is ``parent`` (the gateway's workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status and b"sandbox.worker" in cmd:
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_workers(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` still running as a worker (a reused pid is left alone)."""
    for pid in pids:
        with suppress(OSError):
            if _alive(pid) and b"sandbox.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


@contextmanager
def _running(config: Path, port: int, home: Path, admin_key: str | None = None) -> Iterator[Gateway]:
    """``llmos serve --config config``, ready. On exit: SIGTERM if it still runs, and SIGKILL for
    it and its workers if that does not stop them, so nothing outlives the test."""
    log_path = config.parent / f"server-{time.monotonic_ns()}.log"
    out_path = log_path.with_suffix(".out")
    with log_path.open("wb") as err, out_path.open("wb") as out:
        proc = subprocess.Popen([LLMOS, "serve", "--config", str(config)], stdout=out, stderr=err)
    gw = Gateway(home=home, base_url=f"http://127.0.0.1:{port}", admin_key="", proc=proc, log_path=log_path)
    workers: list[int] = []
    try:
        gw.wait_ready(timeout=60)
        gw.admin_key = admin_key or out_path.read_text().strip()  # printed once, on the first start
        workers += _pids_with_parent(proc.pid)
        yield gw
    finally:
        if proc.poll() is None:
            workers += _pids_with_parent(proc.pid)  # a worker restarted meanwhile
            proc.send_signal(signal.SIGTERM)
        try:
            gw.exit_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            gw.exit_code = proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill_workers(workers)


def _chat(http: httpx.Client, key: str, n: int, load: Load, killed: threading.Event) -> None:
    """One request: a plain chat, or every third one a stream read to its end."""
    body = {"model": "echo", "messages": [{"role": "user", "content": f"hello {n}"}], "max_tokens": 16}
    headers = {"authorization": f"Bearer {key}"}
    if n % 3:
        r = http.post("/v1/chat/completions", json=body, headers=headers)
        acked = (r.headers.get("x-request-id", ""), "complete") if r.status_code == 200 else None
    else:
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers) as r:
            acked = (r.headers.get("x-request-id", ""), "stream_start") if r.status_code == 200 else None
            if acked is not None:
                with load.lock:  # the headers arrived: acknowledged, whatever happens next
                    load.acked.append(acked)
                acked = None
            for _ in r.iter_bytes():
                pass
    with load.lock:
        if acked is not None:
            load.acked.append(acked)
        elif r.status_code != 200 and not killed.is_set():
            load.refused.append(r.status_code)


def _client_loop(gw: Gateway, worker: int, load: Load, killed: threading.Event) -> None:
    """Chats back to back until the gateway is killed; errors are recorded, never raised."""
    n = worker
    with httpx.Client(base_url=gw.base_url, timeout=30) as http:
        while not killed.is_set():
            try:
                _chat(http, gw.admin_key, n, load, killed)
            except httpx.TransportError as exc:
                with load.lock:
                    if not killed.is_set():
                        load.unexpected.append(exc)
                    elif not isinstance(exc, httpx.ConnectError):  # sent, then the gateway died
                        load.cut_off += 1
                return
            except BaseException as exc:  # reported by the test, not lost in a thread
                with load.lock:
                    load.unexpected.append(exc)
                return
            n += CLIENTS


def _kill_mid_stream(gw: Gateway, load: Load, killed: threading.Event) -> str:
    """Open a long stream, and SIGKILL the gateway once its first bytes arrived: at least this
    request is cut off however the load threads happen to be scheduled (they may all sit between
    requests, or hold complete answers they have not read yet, when the kill lands)."""
    words = " ".join(f"w{i}" for i in range(LONG_STREAM_TOKENS))
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": words}],
        "max_tokens": LONG_STREAM_TOKENS,
        "stream": True,
    }
    headers = {"authorization": f"Bearer {gw.admin_key}"}
    with (
        httpx.Client(base_url=gw.base_url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status_code == 200, r.read()
        request_id = r.headers.get("x-request-id", "")
        with load.lock:
            load.acked.append((request_id, "stream_start"))
        chunks = r.iter_bytes()
        first = next(chunks)
        assert b"[DONE]" not in first, "the long stream ended before the kill"
        killed.set()
        gw.proc.kill()
        assert gw.proc.wait(timeout=10) == -signal.SIGKILL
        try:
            rest = b"".join(chunks)
        except httpx.TransportError:
            with load.lock:
                load.cut_off += 1
        else:
            raise AssertionError(f"a stream cut off by SIGKILL read as complete ({len(rest)} more bytes)")
    return request_id


def _verify(gw: Gateway, config: Path) -> tuple[int, int, str]:
    """``llmos audit verify``: exit 0; (entries, checkpoints, origin) from its report."""
    out = gw.cli("audit", "verify", "--config", str(config), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    match = VERIFIED.search(out.stdout)
    assert match, out.stdout
    return int(match[1]), int(match[2]), match[3]


def _worker_events(home: Path) -> int:
    return sum(1 for e in audit_reader.entries(home) if e["endpoint"] == "sandbox.worker")


def _explanations(home: Path) -> int:
    """Entries committing explanation records (written after each response, in the background)."""
    return sum(1 for e in audit_reader.entries(home) if e["phase"] == "explanation")


def _unexplained(home: Path) -> set[str]:
    """Requests in the log without an entry committing their explanation record."""
    entries = [e for e in audit_reader.entries(home) if e["endpoint"] != "sandbox.worker"]
    return {e["request_id"] for e in entries} - {
        e["request_id"] for e in entries if e["phase"] == "explanation"
    }


def test_kill_9_under_load_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "state"
    config = tmp_path / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}, log_level: warning}}\n"
        f"audit: {{checkpoint_every: {CHECKPOINT_EVERY}}}\n"
        "pii: {detector: patterns}\n"
        "models:\n  - {name: echo, kind: echo}\n"
    )
    load = Load()
    killed = threading.Event()
    with _running(config, port, home) as gw:
        admin_key = gw.admin_key
        assert admin_key.startswith("sk-llmos-")
        workers = _pids_with_parent(gw.proc.pid)
        assert workers, "the echo model's worker is running"
        threads = [
            threading.Thread(target=_client_loop, args=(gw, i, load, killed), name=f"load-{i}")
            for i in range(CLIENTS)
        ]
        try:
            for t in threads:
                t.start()
            time.sleep(LOAD_BEFORE_KILL_S)
            with load.lock:
                before_kill = len(load.acked)
            cut = _kill_mid_stream(gw, load, killed)  # SIGKILL, mid-load: no shutdown, no last checkpoint
        finally:
            killed.set()
            for t in threads:
                t.join(timeout=30)
        # The workers notice their channel closed and exit by themselves.
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in workers), f"workers outlived the gateway: {workers}"

        assert not load.unexpected, load.unexpected
        assert not load.refused, f"the gateway refused requests under load: {load.refused[:10]}"
        assert before_kill > 2 * CHECKPOINT_EVERY, f"too little load: {before_kill} acknowledged"
        assert load.cut_off >= 1, "the kill came while requests were in flight"

        entries, checkpoints, origin = _verify(gw, config)
        lifecycle = _worker_events(home)  # the echo worker's start (gateway/workerevents.py)
        explained = _explanations(home)
        stored = {(e["request_id"], e["phase"]) for e in audit_reader.entries(home)}
        missing = [a for a in load.acked if a not in stored]
        assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged entries lost: {missing[:5]}"
        assert all(rid for rid, _ in load.acked), "every response carried its x-request-id"
        assert len(stored) == entries >= len(load.acked)
        assert checkpoints >= 1, "checkpoints were signed during the load"
        rid, phase = load.acked[-1]
        assert audit_reader.entry(home, rid, phase) is not None
        lost = _unexplained(home)  # the kill came before their explanation records
        assert cut in lost

    # Restart on the same state: the log reopens, same origin, and goes on from its head.
    with _running(config, port, home, admin_key) as gw:
        after = []
        with httpx.Client(base_url=gw.base_url, timeout=30) as http:
            for n in range(AFTER_RESTART):
                r = http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {admin_key}"},
                    json={"model": "echo", "messages": [{"role": "user", "content": f"again {n}"}]},
                )
                assert r.status_code == 200, r.text
                after.append(r.headers["x-request-id"])
    assert gw.exit_code in (0, -signal.SIGTERM), gw.log_path.read_text()

    entries2, checkpoints2, origin2 = _verify(gw, config)
    assert origin2 == origin
    # Each request after the restart: its complete entry and its explanation's (written at stop at
    # the latest); each request whose record the kill lost: a record and its entry, written at start.
    assert not _unexplained(home)
    assert _explanations(home) - explained == AFTER_RESTART + len(lost)
    assert entries2 == entries + 2 * AFTER_RESTART + len(lost) + (_worker_events(home) - lifecycle)
    shown = gw.cli("explain", "show", cut, "--json", "--config", str(config))
    assert json.loads(shown.stdout)["record"]["model_attribution"] == {
        "status": "failed",
        "reason": "interrupted",
        "attribution": None,
    }
    verified = gw.cli("explain", "verify", "--config", str(config), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert checkpoints2 > checkpoints
    first = audit_reader.entry(home, after[0], "complete")
    # right after the old log's entries (the restarted worker's start and the recovered records'
    # entries may come first)
    assert first is not None and entries + 1 <= first["seq"] <= entries + 1 + len(lost) + (
        _worker_events(home) - lifecycle
    )
    assert audit_reader.entry(home, after[-1], "complete") is not None
