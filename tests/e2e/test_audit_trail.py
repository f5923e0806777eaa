"""The audit trail the server wrote verifies offline, records outcomes, holds no prompt text, and
`llmos audit verify` names the first altered entry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

SECRET_PROMPT = "my canary prompt 7f3a9c tell me everything"


def test_entries_record_decisions_without_prompt_text(gateway: Gateway) -> None:
    client = gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": SECRET_PROMPT}], max_tokens=5
    )
    resp = raw.parse()
    entry = audit_reader.entry(gateway.home, raw.headers["x-request-id"])
    assert entry is not None
    assert entry["decision"] == "allow"
    assert entry["status"] == 200
    assert entry["model"] == "demo"
    assert entry["endpoint"] == "chat.completions"
    assert entry["principal_id"].startswith("key:")
    assert entry["policy_digest"].startswith("sha256:")
    assert entry["request_digest"].startswith("hmac-sha256:")
    assert entry["prompt_tokens"] == resp.usage.prompt_tokens  # type: ignore[union-attr]
    assert entry["completion_tokens"] == resp.usage.completion_tokens  # type: ignore[union-attr]

    auditor = gateway.create_key("auditor-audit", "auditor")
    with pytest.raises(openai.PermissionDeniedError) as err:
        gateway.client(auditor).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}]
        )
    denied = audit_reader.entry(gateway.home, err.value.response.headers["x-request-id"])
    assert denied is not None
    assert (denied["decision"], denied["status"], denied["reasons"]) == ("deny", 403, ["role_not_permitted"])

    for path in gateway.home.glob("audit.db*"):
        assert SECRET_PROMPT.encode() not in path.read_bytes()
        assert gateway.admin_key.encode() not in path.read_bytes()


def _snapshot(src: Path, dst: Path) -> None:
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def test_verify_passes_then_fails_on_altered_entry(gateway: Gateway, tmp_path: Path) -> None:
    gateway.client().models.list()
    ok = gateway.cli("audit", "verify")
    assert ok.returncode == 0
    assert ok.stdout.startswith("OK: ")
    assert " signing keys sha256:" in ok.stdout  # auditors can tell which key vouched for the log

    copy = tmp_path / "audit.db"
    _snapshot(gateway.home / "audit.db", copy)
    pub = str(gateway.home / "audit_signing_key.pub.pem")
    assert gateway.cli("audit", "verify", "--db", str(copy), "--public-key", pub).returncode == 0
    with sqlite3.connect(copy) as db:
        (seq,) = db.execute(
            "SELECT max(seq) FROM audit_entries WHERE body LIKE '%\"status\":200%'"
        ).fetchone()
        assert seq is not None and seq > 1
        db.execute(
            "UPDATE audit_entries SET body = replace(body, '\"status\":200', '\"status\":201') WHERE seq = ?",
            (seq,),
        )
    bad = gateway.cli("audit", "verify", "--db", str(copy), "--public-key", pub, check=False)
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAILED")
    assert f"seq {seq}" in bad.stdout or f"seq={seq}" in bad.stdout, bad.stdout
