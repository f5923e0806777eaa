"""A gateway that seals principal ids and policy inputs: requests are audited as usual, the log
verifies, and an export that withholds them (the policy inputs name the principal too)
verifies with only the public key and holds the principal id nowhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import free_port, serve_config

pytestmark = pytest.mark.e2e


def test_sealed_fields_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npii: {{detector: patterns}}\n"
        "audit: {sealed_fields: [principal_id, policy_input, output_policy_input]}\n"
        "models:\n  - {name: echo, kind: echo}\n"
    )
    with serve_config(config, port, tmp_path / "state") as gw:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "hello"}], max_tokens=5
        )
        entry = audit_reader.entry(gw.home, raw.headers["x-request-id"])
        assert entry is not None
        assert entry["v"] == 9 and entry["principal_id"].startswith("key:")  # opened for readers
        assert json.loads(entry["policy_input"])["phase"] == "input"
        principal = entry["principal_id"]
    env_cli = gw.cli  # the server has stopped: its last checkpoint covers every entry
    ok = env_cli("audit", "verify", "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out = tmp_path / "bundle"
    exported = env_cli(
        "audit",
        "export",
        "--config",
        str(config),
        "--withhold",
        "principal_id,policy_input,output_policy_input",
        "--out",
        str(out),
    )
    assert exported.returncode == 0, exported.stderr
    assert principal not in (out / "entries.jsonl").read_text()
    pub = tmp_path / "state" / "audit_signing_key.pub.pem"
    verified = env_cli("audit", "verify", str(out), "--public-key", str(pub))
    assert verified.returncode == 0, verified.stdout
    assert verified.stdout.startswith("OK: ")
