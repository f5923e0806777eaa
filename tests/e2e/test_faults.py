"""Faults around a running gateway: a client that walks away mid-stream, an audit log that
cannot be written."""

from __future__ import annotations

import sqlite3
import time

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

LONG = {
    "model": "demo",
    "messages": [{"role": "user", "content": "go on"}],
    "max_tokens": 2000,
    "stream": True,
}


def test_client_disconnect_mid_stream_is_recorded_and_the_worker_moves_on(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.admin_key}"}
    with gateway.http() as http, http.stream("POST", "/v1/chat/completions", json=LONG, headers=headers) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    start = audit_reader.entry(gateway.home, rid, "stream_start")
    assert start is not None, "a stream's start is recorded before its first byte"
    assert (start["status"], start["decision"]) == (200, "allow")
    # The gateway notices the disconnect, cancels the generation and records status 499.
    deadline = time.monotonic() + 30
    end = None
    while time.monotonic() < deadline and end is None:
        end = audit_reader.entry(gateway.home, rid, "stream_end")
        time.sleep(0.05)
    assert end is not None, "an abandoned stream's end must be recorded"
    assert (end["status"], end["decision"]) == (499, "allow")
    # Greedy, so the demo model cannot sample its end token early and answer in fewer tokens.
    ok = gateway.client().chat.completions.create(
        model="demo", messages=LONG["messages"], max_tokens=3, temperature=0
    )
    assert ok.usage is not None and ok.usage.completion_tokens == 3


def test_an_audit_write_failure_withholds_the_response(gateway: Gateway) -> None:
    # Another writer holds SQLite's write lock: the gateway's append times out and fails.
    blocker = sqlite3.connect(gateway.home / "audit.db", timeout=1)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(openai.InternalServerError) as err:
            gateway.client().chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
        assert err.value.status_code == 503
        assert err.value.code == "audit_unavailable"
        assert "choices" not in err.value.response.text
        rid = err.value.response.headers["x-request-id"]
    finally:
        blocker.rollback()
        blocker.close()
    assert audit_reader.entry(gateway.home, rid) is None
    ok = gateway.client().chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert ok.choices[0].message.content is not None
    assert gateway.cli("audit", "verify").returncode == 0


def test_a_stream_whose_start_cannot_be_recorded_is_refused_before_any_byte(gateway: Gateway) -> None:
    blocker = sqlite3.connect(gateway.home / "audit.db", timeout=1)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        body = {
            "model": "demo",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "stream": True,
        }
        headers = {"authorization": f"Bearer {gateway.admin_key}"}
        with gateway.http() as http:
            r = http.post("/v1/chat/completions", json=body, headers=headers)
    finally:
        blocker.rollback()
        blocker.close()
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "audit_unavailable"
    assert "data:" not in r.text
