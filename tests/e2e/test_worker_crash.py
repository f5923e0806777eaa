"""A worker that dies mid-request: in-flight requests get a 503, the worker restarts, serving goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

LONG = {
    "model": "demo",
    "messages": [{"role": "user", "content": "go"}],
    "max_tokens": 2000,
    "temperature": 0,
}


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _single_worker(gateway: Gateway) -> int:
    pids = gateway.worker_pids()
    assert len(pids) == 1, pids
    return pids[0]


def _wait_for_new_worker(gateway: Gateway, old: int) -> int:
    gateway.wait_ready(timeout=120)
    new = _single_worker(gateway)
    assert new != old
    return new


def test_stream_in_flight_gets_error_and_worker_restarts(gateway: Gateway) -> None:
    pid = _single_worker(gateway)
    stream = gateway.client().chat.completions.create(**LONG, stream=True)
    rid = stream.response.headers["x-request-id"]
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as err:
        for _ in stream:
            pass
    assert "stopped unexpectedly" in str(err.value)
    end = audit_reader.entry(gateway.home, rid, "stream_end")
    assert end is not None and end["status"] == 503
    _wait_for_new_worker(gateway, pid)
    ok = gateway.client().chat.completions.create(model="demo", messages=LONG["messages"], max_tokens=4)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_non_stream_in_flight_gets_503(gateway: Gateway) -> None:
    pid = _single_worker(gateway)
    result: dict[str, BaseException | object] = {}

    def call() -> None:
        try:
            result["ok"] = gateway.client().chat.completions.create(**LONG)
        except BaseException as exc:
            result["err"] = exc

    idle = _cpu_ticks(pid)
    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while _cpu_ticks(pid) < idle + 5 and time.monotonic() < deadline:  # generating: burning CPU
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=60)
    err = result.get("err")
    assert isinstance(err, openai.InternalServerError), result
    assert err.status_code == 503
    assert err.code == "worker_crashed"
    assert err.response.headers["x-request-id"]
    _wait_for_new_worker(gateway, pid)
    assert gateway.client().models.list().data
