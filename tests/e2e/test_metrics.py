"""Prometheus metrics and JSON logs of a real gateway: /metrics needs an admin or auditor credential, the
counters move under load (requests, PII findings, policy denials, audit appends), the state
gauges show the worker, fail-open counters stay at zero, and metrics.listen serves the same
registry without credentials on its own port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, int]]:
    root: Path = tmp_path_factory.mktemp("metrics")
    port, metrics_port = free_port(), free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}, log_format: json}}\npii: {{detector: patterns}}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}\n"
        "models:\n  - {name: echo, kind: echo}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw, metrics_port


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


def scrape(gw: Gateway, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    return httpx.get(gw.base_url + "/metrics", headers=headers, timeout=30)


def test_metrics_need_an_admin_or_auditor_credential(gateway: tuple[Gateway, int]) -> None:
    gw, _ = gateway
    assert scrape(gw, None).status_code == 401
    user = gw.create_key("metrics-user", "user")
    refused = scrape(gw, user)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "role_not_permitted"
    auditor = gw.create_key("prometheus", "auditor")
    ok = scrape(gw, auditor)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert "llmos_requests_total" in ok.text


def test_counters_move_under_load_and_state_is_shown(gateway: tuple[Gateway, int]) -> None:
    gw, _ = gateway
    before = samples(scrape(gw, gw.admin_key).text)
    client = gw.client()
    for n in range(5):
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": f"hello {n}"}])
    client.chat.completions.create(  # sensitive data in, redacted (the default policy's obligation)
        model="echo", messages=[{"role": "user", "content": "mail me at jane.doe@example.com"}]
    )
    stream = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "streamed answer"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed answer"
    user = gw.create_key("metrics-denied", "user")
    assert (
        httpx.get(gw.base_url + "/admin/workers", headers={"authorization": f"Bearer {user}"}).status_code
        == 403
    )
    after = samples(scrape(gw, gw.admin_key).text)

    chat = {"route": "chat.completions", "model": "echo", "status": "200", "decision": "allow"}
    assert value(after, "llmos_requests_total", **chat) - value(before, "llmos_requests_total", **chat) == 7
    for mode in ("json", "stream"):  # the output guard: scanning, redaction, the output decision
        assert value(after, "llmos_output_guard_seconds_count", mode=mode) > value(
            before, "llmos_output_guard_seconds_count", mode=mode
        )
    assert value(after, "llmos_stream_holdback_chars_count") - value(before, "llmos_stream_holdback_chars_count") == 1
    assert value(after, "llmos_request_duration_seconds_count", route="chat.completions") >= 7
    assert (
        value(after, "llmos_pii_findings_total", type="EMAIL_ADDRESS", direction="input")
        - value(before, "llmos_pii_findings_total", type="EMAIL_ADDRESS", direction="input")
        == 1
    )
    assert value(after, "llmos_policy_denials_total", reason="role_not_permitted") >= 1
    assert value(after, "llmos_requests_total", route="admin.workers", status="403", decision="deny") >= 1
    assert value(after, "llmos_policy_evaluation_seconds_count", phase="input") > value(
        before, "llmos_policy_evaluation_seconds_count", phase="input"
    )
    assert (
        value(after, "llmos_audit_append_seconds_count") - value(before, "llmos_audit_append_seconds_count")
        >= 7
    )
    assert value(after, "llmos_worker_state", model="echo", state="ready") == 1
    assert ("llmos_audit_queue_depth", frozenset()) in after  # (an explanation's lazy entry may wait)
    assert 0 <= value(after, "llmos_audit_checkpoint_age_seconds") < 3600
    assert value(after, "llmos_device_memory_bytes", kind="budget") > 0
    assert value(after, "llmos_fail_open_total") == 0  # nothing let through unchecked
    # No text, address or key in any label.
    text = scrape(gw, gw.admin_key).text
    assert "jane.doe" not in text and "hello" not in text and gw.admin_key not in text


def test_metrics_listen_serves_the_same_registry_without_credentials(gateway: tuple[Gateway, int]) -> None:
    _, metrics_port = gateway
    plain = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
    assert plain.status_code == 200
    metrics = samples(plain.text)
    assert value(metrics, "llmos_requests_total", route="chat.completions") >= 1
    assert value(metrics, "llmos_worker_state", model="echo", state="ready") == 1


def test_logs_are_json_lines_with_each_requests_outcome_and_no_key(gateway: tuple[Gateway, int]) -> None:
    import json

    gw, _ = gateway
    reply = httpx.post(
        gw.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.admin_key}"},
        json={"model": "echo", "messages": [{"role": "user", "content": "write to jane.doe@example.com"}]},
        timeout=30,
    )
    request_id = reply.headers["x-request-id"]
    text = gw.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    (access,) = [x for x in lines if x["logger"] == "llmos.access" and x.get("request_id") == request_id]
    assert access["route"] == "chat.completions" and access["model"] == "echo" and access["status"] == 200
    assert access["decision"] == "allow" and access["principal_id"].startswith("key:")
    assert isinstance(access["latency_ms"], int)
    assert gw.admin_key not in text and "jane.doe" not in text
