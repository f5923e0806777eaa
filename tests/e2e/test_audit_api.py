"""/v1/audit/*: an auditor proves requests it made against signed checkpoints of the running
gateway, with nothing but the gateway's public key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from gateway.audit import merkle
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.entry import entry_hash, parse_entry
from gateway.audit.keys import load_public_key
from gateway.audit.verify import open_checkpoint
from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
PATHS = ("/v1/audit/checkpoint", "/v1/audit/entries/req_x", "/v1/audit/consistency?from=1&to=1")


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _checkpoint(gateway: Gateway, http: httpx.Client, auditor: dict[str, str]) -> tuple[str, Checkpoint]:
    r = http.get("/v1/audit/checkpoint", headers=auditor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    public_key = load_public_key(gateway.home / "audit_signing_key.pub.pem")
    return r.text, open_checkpoint(r.text, public_key)


def _proofs(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v, validate=True) for v in values]


def test_users_are_refused(gateway: Gateway) -> None:
    user = _auth(gateway.create_key("audit-api-user", "user"))
    with gateway.http() as http:
        for path in PATHS:
            r = http.get(path, headers=user)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "role_not_permitted"
            denied = audit_reader.entry(gateway.home, r.headers["x-request-id"])
            assert denied is not None
            assert (denied["decision"], denied["status"]) == ("deny", 403)
            assert denied["endpoint"].startswith("audit.")


def test_an_auditor_proves_a_request_in_a_signed_checkpoint(gateway: Gateway, tmp_path: Path) -> None:
    public_key = load_public_key(gateway.home / "audit_signing_key.pub.pem")
    user = _auth(gateway.create_key("audit-api-chatter", "user"))
    auditor = _auth(gateway.create_key("audit-api-auditor", "auditor"))
    with gateway.http() as http:
        chat = http.post("/v1/chat/completions", headers=user, json=CHAT)
        assert chat.status_code == 200, chat.text
        request_id = chat.headers["x-request-id"]

        note, checkpoint = _checkpoint(gateway, http, auditor)
        recorded = audit_reader.entry(gateway.home, request_id)
        assert recorded is not None and checkpoint.size >= recorded["seq"]  # it covers the chat

        # The note as served is what `llmos audit verify --checkpoint` takes.
        saved = tmp_path / "checkpoint.txt"
        saved.write_text(note, encoding="utf-8")
        verified = gateway.cli("audit", "verify", "--checkpoint", str(saved), check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        r = http.get(f"/v1/audit/entries/{request_id}", headers=auditor)
        assert r.status_code == 200, r.text
        got = r.json()
    body = got["entry"].encode("utf-8")
    entry = parse_entry(body)
    assert (entry["request_id"], entry["endpoint"], entry["status"]) == (request_id, "chat.completions", 200)
    assert got["seq"] == entry["seq"] == recorded["seq"] and got["leaf_index"] == got["seq"] - 1
    assert got["entry_hash"] == entry_hash(body)
    assert got["signature"] is None  # proved by the inclusion proof below, not signed one by one
    proved_in = open_checkpoint(got["checkpoint"], public_key, origin=checkpoint.origin)
    assert proved_in.size == got["tree_size"] >= checkpoint.size
    merkle.verify_inclusion(
        merkle.leaf_hash(body),
        got["leaf_index"],
        proved_in.size,
        _proofs(got["inclusion_proof"]),
        proved_in.root_hash,
    )
    # A proof checked against another root fails: the check above means something.
    with pytest.raises(merkle.MerkleProofError):
        merkle.verify_inclusion(
            merkle.leaf_hash(body + b" "),
            got["leaf_index"],
            proved_in.size,
            _proofs(got["inclusion_proof"]),
            proved_in.root_hash,
        )


def test_both_entries_of_a_stream_are_provable(gateway: Gateway) -> None:
    public_key = load_public_key(gateway.home / "audit_signing_key.pub.pem")
    auditor = _auth(gateway.create_key("audit-api-stream-auditor", "auditor"))
    with gateway.http() as http:
        with http.stream(
            "POST", "/v1/chat/completions", headers=_auth(gateway.admin_key), json={**CHAT, "stream": True}
        ) as stream:
            assert stream.status_code == 200
            request_id = stream.headers["x-request-id"]
            assert "data: [DONE]" in "".join(stream.iter_text())
        for phase in ("stream_start", "stream_end"):
            r = http.get(f"/v1/audit/entries/{request_id}", params={"phase": phase}, headers=auditor)
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["phase"] == phase == json.loads(got["entry"])["phase"]
            checkpoint = open_checkpoint(got["checkpoint"], public_key)
            merkle.verify_inclusion(
                merkle.leaf_hash(got["entry"].encode("utf-8")),
                got["leaf_index"],
                checkpoint.size,
                _proofs(got["inclusion_proof"]),
                checkpoint.root_hash,
            )
        # Without a phase: the first entry of the request.
        first = http.get(f"/v1/audit/entries/{request_id}", headers=auditor).json()
        assert first["phase"] == "stream_start"


def test_a_newer_checkpoint_is_consistent_with_an_older_one(gateway: Gateway) -> None:
    auditor = _auth(gateway.create_key("audit-api-consistency", "auditor"))
    with gateway.http() as http:
        _, old = _checkpoint(gateway, http, auditor)
        assert (
            http.post("/v1/chat/completions", headers=_auth(gateway.admin_key), json=CHAT).status_code == 200
        )
        _, new = _checkpoint(gateway, http, auditor)
        assert new.size > old.size and new.origin == old.origin

        r = http.get("/v1/audit/consistency", params={"from": old.size, "to": new.size}, headers=auditor)
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["from"], got["to"]) == (old.size, new.size)
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, _proofs(got["proof"]))

        as_json = http.get("/v1/audit/checkpoint", params={"format": "json"}, headers=auditor).json()
        assert as_json["origin"] == new.origin and as_json["size"] > new.size
        assert as_json["verifier_key"].startswith(new.origin + "+")


def test_bad_parameters_and_unknown_ids(gateway: Gateway) -> None:
    auditor = _auth(gateway.create_key("audit-api-bad", "auditor"))
    with gateway.http() as http:
        _, latest = _checkpoint(gateway, http, auditor)
        for query, param in (
            ({"from": "0", "to": "1"}, "from"),
            ({"from": "x", "to": "1"}, "from"),
            ({"from": "2", "to": "1"}, "from"),
            ({"from": "1", "to": str(latest.size + 1000)}, "to"),
        ):
            r = http.get("/v1/audit/consistency", params=query, headers=auditor)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert (error["type"], error["code"], error["param"]) == (
                "invalid_request_error",
                "invalid_value",
                param,
            )

        missing = http.get("/v1/audit/consistency", params={"from": "1"}, headers=auditor)
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "to"

        unknown = http.get("/v1/audit/entries/req_ffffffffffffffffffffffffffffffff", headers=auditor)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "entry_not_found"
        recorded = audit_reader.entry(gateway.home, unknown.headers["x-request-id"])
        assert recorded is not None and (recorded["endpoint"], recorded["status"]) == ("audit.entries", 404)
