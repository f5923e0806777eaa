"""A policy author's loop on real recorded traffic: `llmos policy test`, `eval` and `replay`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e


def test_decisions_keep_their_pii_free_policy_input(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="demo", messages=[{"role": "user", "content": "reach me at jane@example.com"}], max_tokens=3
    )
    entry = audit_reader.entry(gateway.home, raw.headers["x-request-id"])
    assert entry is not None
    doc = json.loads(entry["policy_input"])
    assert doc["phase"] == "input"
    assert doc["pii"] == {"findings": {"EMAIL_ADDRESS": 1}, "total": 1}
    assert doc["client"]["address"] == "127.0.0.0"  # the network, not the address
    assert "jane" not in entry["policy_input"]
    entities = json.loads(entry["obligations"])["redact"]["entities"]
    assert {"PERSON", "EMAIL_ADDRESS", "CREDIT_CARD", "AWS_ACCESS_KEY"} <= set(entities)
    assert json.loads(entry["output_policy_input"])["phase"] == "output"


def test_replay_lists_the_decisions_a_change_flips(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.create_key("replay-user", "user")
    auditor = gateway.create_key("replay-auditor", "auditor")
    gateway.client(user).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client(auditor).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}]
        )

    candidate = tmp_path / "candidate"
    shutil.copytree(gateway.home / "policies", candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["llmos"]["config"]["roles"]["user"]["models"] = []
    (candidate / "data.json").write_text(json.dumps(data))
    access = candidate / "access.rego"
    access.write_text(
        access.read_text().replace(
            '"chat.completions": {"admin", "user", "contractor"}',
            '"chat.completions": {"admin", "user", "contractor", "auditor"}',
        )
    )
    tests = gateway.cli("policy", "test", str(candidate), check=False)
    assert tests.returncode == 1  # the policy's own tests notice the change too
    assert "FAIL  authz_test.rego: test_auditor_may_not_chat" in tests.stdout

    out = gateway.cli(
        "policy", "replay", "--candidate", str(candidate), "--markdown", "--fail-on-change", check=False
    )
    assert out.returncode == 1, out.stderr
    assert "| allow -> deny |" in out.stdout
    assert "| deny -> allow |" in out.stdout
    assert "replay-user" not in out.stdout  # principals appear by id, never by key
    text = gateway.cli("policy", "replay", "--candidate", str(gateway.home / "policies")).stdout
    assert " 0 would change" in text


def test_eval_prints_the_decision_and_the_rules(gateway: Gateway, tmp_path: Path) -> None:
    doc = {
        "principal": {"id": "key:1", "tenant": "acme", "roles": ["user"], "auth_method": "api_key"},
        "request": {"endpoint": "chat.completions", "model": "demo", "max_tokens": 99999},
    }
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    out = gateway.cli("policy", "eval", "--input", str(path), "--explain")
    decision = json.loads(out.stdout.split("\n\n#")[0])
    assert decision["allow"] is False
    assert [r["code"] for r in decision["reasons"]] == ["max_tokens_too_large"]
    assert "role_permitted = true" in out.stdout


def test_obligations_reach_the_model_and_denials_read_well(gateway: Gateway) -> None:
    client = gateway.client()

    def prompt_tokens(text: str) -> int:
        usage = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": text}], max_tokens=1
        ).usage
        assert usage is not None
        return usage.prompt_tokens

    # The model sees the placeholder, not the address: both prompts tokenise the same.
    assert prompt_tokens("write to jane.doe@example.com today") == prompt_tokens(
        "write to <EMAIL_ADDRESS_1> today"  # the numbered placeholder the model is sent
    )
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "my ssn is 123-45-6789"}]
        )
    assert err.value.code == "national_id_to_external_model"
    assert "only models labelled internal may receive it" in err.value.message
    assert "123-45-6789" not in err.value.message


def test_policy_status_for_admins_only(gateway: Gateway) -> None:
    with gateway.http() as http:
        r = http.get("/admin/policy", headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200
        status = r.json()
        assert status["digest"].startswith("sha256:")
        assert status["output_policy"] is True
        assert {"reloads", "reload_failures", "last_reload_error", "decision_failures"} <= set(status)
        user = gateway.create_key("status-user", "user")
        denied = http.get("/admin/policy", headers={"authorization": f"Bearer {user}"})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "role_not_permitted"
