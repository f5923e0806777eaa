"""Crash containment through a real gateway and the official openai client: a hung worker's
request gets 504, a crash-looping model is refused with 503 until it recovers, the other model
answers throughout, and the audit trail records each worker event."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("containment")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "workers: {request_timeout_s: 2, unhealthy_after_failures: 2,"
        " restart_backoff_initial_s: 0.5, restart_backoff_max_s: 1}\n"
        "models:\n"
        "  - {name: victim, kind: echo}\n"
        "  - {name: bystander, kind: echo}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def worker_pid(model: str) -> int | None:
    """The live worker process serving ``model`` (its ``--name``), if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        named = any(a == b"--name" and b == model.encode() for a, b in itertools.pairwise(args))
        if b"sandbox.worker" in args and named and state != "Z":
            return int(entry.name)
    return None


def readiness(gateway: Gateway) -> dict[str, str]:
    with gateway.http() as http:
        states: dict[str, str] = http.get("/readyz").json()["models"]
    return states


def new_worker(gateway: Gateway, model: str, old: int | None, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = worker_pid(model)
        if pid is not None and pid != old and readiness(gateway).get(model) == "ready":
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no new {model} worker")


def ask(gateway: Gateway, model: str, text: str) -> str:
    reply = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=16
    )
    return reply.choices[0].message.content or ""


def worker_events(gateway: Gateway) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (e["model"], tuple(e["reasons"]))
        for e in audit_reader.entries(gateway.home)
        if e["endpoint"] == "sandbox.worker"
    ]


def test_a_hung_worker_answers_504_and_the_other_model_never_notices(two_models: Gateway) -> None:
    pid = new_worker(two_models, "victim", None)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        ask(two_models, "victim", "hello")
    assert err.value.status_code == 504
    assert err.value.code == "model_timeout"
    assert err.value.body["type"] == "timeout_error"  # type: ignore[index]
    assert time.monotonic() - started < 15
    assert ask(two_models, "bystander", "unaffected") == "unaffected"
    new_worker(two_models, "victim", pid)
    assert ask(two_models, "victim", "back") == "back"
    events = worker_events(two_models)
    assert ("victim", ("worker_hung",)) in events
    assert ("victim", ("worker_exited", "signal_sigkill")) in events
    ready = [reasons for model, reasons in events if model == "bystander"]
    assert ready and ready[0][0] == "worker_ready"  # with the layers it lacked, if any


def test_a_crash_loop_is_refused_at_once_until_the_model_recovers(two_models: Gateway) -> None:
    pid = new_worker(two_models, "victim", None)
    os.kill(pid, signal.SIGSEGV)
    pid = new_worker(two_models, "victim", pid)
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    deadline = time.monotonic() + 10
    while readiness(two_models)["victim"] != "unhealthy":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        ask(two_models, "victim", "hello")
    assert err.value.status_code == 503 and err.value.code == "model_unhealthy"
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 1
    assert ask(two_models, "bystander", "still serving") == "still serving"
    new_worker(two_models, "victim", pid)
    assert ask(two_models, "victim", "recovered") == "recovered"
    events = worker_events(two_models)
    assert ("victim", ("worker_exited", "signal_sigsegv")) in events
    assert ("victim", ("model_unhealthy", "failures_2")) in events
    assert ("victim", ("model_recovered",)) in events
    assert not [reasons for model, reasons in events if model == "bystander" and reasons[0] != "worker_ready"]
