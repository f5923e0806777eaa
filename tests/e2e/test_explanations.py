"""Explanation records through a real gateway: every request, allowed or denied, streamed or
not, has a record reachable from its x-request-id; served requests carry the demo model's token
attribution computed by its sandboxed worker; the records verify against the audit log; only the
caller and auditors can read them; the heatmap page renders offline."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from explain.record import ExplanationRecord
from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, explaining_policies, fetch, free_port, serve_config, wait_record

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def explaining(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    root = tmp_path_factory.mktemp("explain")
    explaining_policies(root)
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npolicy: {{dir: policies, run_tests_on_load: false}}\n"
        "pii: {detector: patterns}\n"
        "models:\n"
        "  - {name: demo, path: state/models/demo, threads: 1}\n"
        "  - {name: echo, kind: echo}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw, config


def chat(gw: Gateway, key: str, model: str, text: str, **extra: Any) -> httpx.Response:
    with gw.http() as http:
        return http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra},
        )


def test_a_served_request_is_explained_by_its_worker(explaining: tuple[Gateway, Path]) -> None:
    gw, _ = explaining
    r = chat(gw, gw.admin_key, "demo", "Write to alice@example.com about the quarterly numbers")
    assert r.status_code == 200, r.text
    body = wait_record(gw, r.headers["x-request-id"])
    record = ExplanationRecord.from_json(body["record"], digest=body["digest"])  # valid and unaltered
    assert body["audit"]["committed"] is True and body["audit"]["seq"] > 0
    assert record.decision.decision == "allow" and record.level == "summary"
    rules = {rule.rule for rule in record.decision.rules}
    assert {"access.role_permitted", "obligations.redact", "obligations.explain"} <= rules
    assert [f.entity_type for f in record.pii_findings] == ["EMAIL_ADDRESS"]  # where, not what
    assert "alice@example.com" not in json.dumps(body)
    attribution = record.model_attribution
    assert attribution.status == "ok", attribution
    assert attribution.attribution is not None
    a = attribution.attribution
    usage = r.json()["usage"]
    assert a.prompt_total == usage["prompt_tokens"] and a.output_total == usage["completion_tokens"]
    assert len(a.scores) == len(a.prompt_ids)
    assert record.model_digest is not None  # the signed demo model that answered


def test_streams_denials_and_echo_have_records_too(explaining: tuple[Gateway, Path]) -> None:
    gw, _ = explaining
    auditor = gw.create_key("explain-auditor", "auditor")
    ids = {}
    with (
        gw.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {gw.admin_key}"},
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "stream": True,
            },
        ) as s,
    ):
        assert s.status_code == 200
        ids["stream"] = s.headers["x-request-id"]
        s.read()
    denied = chat(gw, auditor, "demo", "hi")  # auditors may not generate
    assert denied.status_code == 403
    ids["denied"] = denied.headers["x-request-id"]
    echo = chat(gw, gw.admin_key, "echo", "hello there")
    assert echo.status_code == 200
    ids["echo"] = echo.headers["x-request-id"]
    records = {k: ExplanationRecord.from_json(wait_record(gw, v)["record"]) for k, v in ids.items()}
    assert records["stream"].model_attribution.status == "ok"
    denial = records["denied"]
    assert denial.decision.decision == "deny"
    assert (denial.model_attribution.status, denial.model_attribution.reason) == ("not_applicable", "denied")
    assert "deny.role_not_permitted" in {rule.rule for rule in denial.decision.rules}
    assert [r.code for r in denial.decision.reasons] == ["role_not_permitted"]
    assert (records["echo"].model_attribution.status, records["echo"].model_attribution.reason) == (
        "not_applicable",
        "echo_model",
    )


def test_only_the_caller_and_auditors_read_a_record(explaining: tuple[Gateway, Path]) -> None:
    gw, _ = explaining
    alice = gw.create_key("explain-alice", "user")
    bob = gw.create_key("explain-bob", "user")
    auditor = gw.create_key("explain-auditor-2", "auditor")
    r = chat(gw, alice, "echo", "mine")
    rid = r.headers["x-request-id"]
    assert wait_record(gw, rid, alice)["record"]["principal_id"]
    assert fetch(gw, rid, auditor).status_code == 200
    other = fetch(gw, rid, bob)
    assert other.status_code == 404 and other.json()["error"]["code"] == "explanation_not_found"
    assert fetch(gw, "req_does_not_exist", auditor).status_code == 404
    page = fetch(gw, rid, alice, format="html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<html" in page.text.lower() and "http://" not in page.text and "https://" not in page.text
    assert fetch(gw, rid, alice, format="pdf").status_code == 400


def test_every_request_of_the_run_is_explained_and_verifies(explaining: tuple[Gateway, Path]) -> None:
    gw, config = explaining
    time.sleep(0.5)
    final = [  # every request's final entry (worker lifecycle events are not requests)
        e
        for e in audit_reader.entries(gw.home)
        if e["phase"] in ("complete", "stream_end") and e["endpoint"] != "sandbox.worker"
    ]
    assert len(final) >= 8
    explained = {e["request_id"]: e for e in audit_reader.entries(gw.home) if e["phase"] == "explanation"}
    deadline = time.monotonic() + 60
    while {e["request_id"] for e in final} - set(explained) and time.monotonic() < deadline:
        time.sleep(0.2)
        explained = {e["request_id"]: e for e in audit_reader.entries(gw.home) if e["phase"] == "explanation"}
    missing = {e["request_id"] for e in final} - set(explained)
    assert not missing, f"requests without an explanation record: {sorted(missing)[:5]}"
    out = gw.cli("explain", "verify", "--config", str(config))
    assert out.stdout.startswith(f"OK: {len(explained)} explanation records"), out.stdout + out.stderr
    audit = gw.cli("audit", "verify", "--config", str(config), check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_an_altered_record_fails_verification(explaining: tuple[Gateway, Path], tmp_path: Path) -> None:
    gw, config = explaining
    r = chat(gw, gw.admin_key, "echo", "to be altered")
    rid = r.headers["x-request-id"]
    wait_record(gw, rid)
    shown = gw.cli("explain", "show", rid, "--config", str(config), "--no-color")
    assert rid in shown.stdout
    page = tmp_path / "page.html"
    gw.cli("explain", "show", rid, "--config", str(config), "--html", str(page))
    assert "<html" in page.read_text().lower()
    db = gw.home / "explanations.db"
    with sqlite3.connect(db) as conn:  # rewrite the record and its digests: only the audit log notices
        (body,) = conn.execute("SELECT body FROM explanations WHERE request_id = ?", (rid,)).fetchone()
        doc = json.loads(body)
        doc["decision"]["status"] = 201
        new = ExplanationRecord.from_json(doc)
        conn.execute(
            "UPDATE explanations SET body = ?, digest = ?, evidence_digest = ? WHERE request_id = ?",
            (new.canonical_bytes(), new.digest(), new.evidence_digest(), rid),
        )
    out = gw.cli("explain", "verify", rid, "--config", str(config), check=False)
    assert out.returncode == 1 and "commits another digest" in out.stdout, out.stdout + out.stderr
