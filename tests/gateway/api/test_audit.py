"""/v1/audit/*: in process, over a real audit log, key store and the default policy.

Covers what a shared e2e gateway cannot set up: an empty log, a policy that allows more than
it should (the role backstop), an audit sink without a tree, and proofs between every pair of
checkpoints of a small log. tests/e2e/test_audit_api.py covers the running gateway.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.api.audit import consistency_range, parse_query, parse_tree_size
from gateway.api.audit import router as audit_router
from gateway.api.errors import install_error_handlers
from gateway.api.middleware import RequestIdMiddleware
from gateway.audit import merkle
from gateway.audit.entry import entry_hash, parse_entry
from gateway.audit.log import AuditLog
from gateway.audit.verify import open_checkpoint
from gateway.errors import InvalidRequest
from gateway.keys import ApiKeyStore
from gateway.pipeline import Pipeline
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoEngine
from gateway.types import AuditRecord, Decision

POLICIES = Path(__file__).resolve().parents[3] / "policies"


@dataclass
class Setup:
    http: TestClient
    audit: AuditLog
    public_key: Ed25519PublicKey
    keys: ApiKeyStore

    def key(self, role: str) -> dict[str, str]:
        key, _ = self.keys.create(f"{role}-{len(self.keys.list())}", role, "acme")
        return {"authorization": f"Bearer {key}"}


class AllowAll:
    """A policy that allows every request: the routes' own role check must still refuse."""

    digest = "sha256:allow-all"
    has_output_policy = False

    def decide(self, policy_input: dict[str, Any], phase: str = "input") -> Decision:
        return Decision(allow=True)


class Sink:
    """An audit sink without a Merkle tree."""

    async def append_async(self, record: AuditRecord) -> object:
        return None


def _app(pipeline: Pipeline) -> FastAPI:
    app = FastAPI()
    app.state.pipeline = pipeline
    install_error_handlers(app)
    app.include_router(audit_router)
    app.add_middleware(RequestIdMiddleware)
    return app


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    private_key = Ed25519PrivateKey.generate()
    keys = ApiKeyStore(tmp_path / "keys.db", b"p" * 32)
    engine = RegoEngine(load_bundle(POLICIES), "data.llmos.authz.decision")
    with AuditLog(tmp_path / "audit.db", private_key) as audit:
        pipeline = Pipeline(keys=keys, policy=engine, audit=audit, workers={}, digest_key=b"d" * 32)
        with TestClient(_app(pipeline)) as http:
            yield Setup(http, audit, private_key.public_key(), keys)
    keys.close()


def _b64(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v, validate=True) for v in values]


def test_an_empty_log_has_no_checkpoint_until_the_call_itself_is_recorded(setup: Setup) -> None:
    auditor = setup.key("auditor")
    first = setup.http.get("/v1/audit/checkpoint", headers=auditor)
    assert first.status_code == 404 and first.json()["error"]["code"] == "no_checkpoint"

    second = setup.http.get("/v1/audit/checkpoint", headers=auditor)
    assert second.status_code == 200
    assert second.headers["content-type"] == "text/plain; charset=utf-8"
    checkpoint = open_checkpoint(second.text, setup.public_key, origin=setup.audit.origin)
    assert checkpoint.size == 1  # the refused first call, and nothing else yet

    entry = setup.audit.get(first.headers["x-request-id"])
    assert entry is not None
    assert (entry["endpoint"], entry["status"], entry["decision"]) == ("audit.checkpoint", 404, "allow")


def test_the_json_form_describes_the_same_checkpoint(setup: Setup) -> None:
    auditor = setup.key("auditor")
    setup.http.get("/v1/audit/checkpoint", headers=auditor)
    r = setup.http.get("/v1/audit/checkpoint", params={"format": "json"}, headers=auditor)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"origin", "size", "root_hash", "note", "created", "verifier_key"}
    checkpoint = open_checkpoint(body["note"], setup.public_key)
    assert body["origin"] == checkpoint.origin == setup.audit.origin
    assert body["size"] == checkpoint.size == 1
    assert base64.b64decode(body["root_hash"]) == checkpoint.root_hash
    assert body["verifier_key"] == setup.audit.verifier_key
    assert body["verifier_key"].startswith(setup.audit.origin + "+")


def test_every_entry_is_proved_in_the_latest_checkpoint(setup: Setup) -> None:
    auditor = setup.key("auditor")
    ids = [setup.http.get("/v1/audit/checkpoint", headers=auditor).headers["x-request-id"] for _ in range(6)]
    for seq, request_id in enumerate(ids, start=1):
        r = setup.http.get(f"/v1/audit/entries/{request_id}", headers=auditor)
        assert r.status_code == 200, r.text
        got = r.json()
        body = got["entry"].encode("utf-8")
        assert parse_entry(body)["request_id"] == request_id
        assert (got["seq"], got["leaf_index"], got["phase"]) == (seq, seq - 1, "complete")
        assert got["entry_hash"] == entry_hash(body) == hashlib.sha256(body).hexdigest()
        assert got["signature"] is None  # proved by the inclusion proof, not signed one by one
        checkpoint = open_checkpoint(got["checkpoint"], setup.public_key, origin=setup.audit.origin)
        assert checkpoint.size == got["tree_size"] >= seq
        merkle.verify_inclusion(
            merkle.leaf_hash(body),
            seq - 1,
            checkpoint.size,
            _b64(got["inclusion_proof"]),
            checkpoint.root_hash,
        )


def test_an_entry_not_yet_covered_gets_a_new_checkpoint(setup: Setup) -> None:
    auditor = setup.key("auditor")
    setup.http.get("/v1/audit/checkpoint", headers=auditor)  # seq 1
    setup.http.get("/v1/audit/checkpoint", headers=auditor)  # seq 2, checkpoint of 1
    latest = setup.audit.latest_checkpoint()
    assert latest is not None and latest.size == 1
    second = setup.audit.get(_request_id(setup, 2))
    assert second is not None
    r = setup.http.get(f"/v1/audit/entries/{second['request_id']}", headers=auditor)
    assert r.status_code == 200 and r.json()["tree_size"] >= 2


def _request_id(setup: Setup, seq: int) -> str:
    with setup.audit._lock:  # test only: find an entry by position
        row = setup.audit._store.get_seq(seq)
    assert row is not None
    return row.request_id


def test_consistency_between_every_pair_of_checkpoints(setup: Setup) -> None:
    auditor = setup.key("auditor")
    notes = [setup.http.get("/v1/audit/checkpoint", headers=auditor).text for _ in range(10)][1:]
    checkpoints = [open_checkpoint(n, setup.public_key) for n in notes]
    assert [c.size for c in checkpoints] == list(range(1, 10))
    for old in checkpoints:
        for new in checkpoints:
            if old.size > new.size:
                continue
            r = setup.http.get(
                "/v1/audit/consistency", params={"from": old.size, "to": new.size}, headers=auditor
            )
            assert r.status_code == 200, r.text
            got = r.json()
            assert (got["from"], got["to"]) == (old.size, new.size)
            merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, _b64(got["proof"]))


BAD_QUERIES = [
    # (path, query, code, param)
    ("/v1/audit/consistency", "from=1", "missing_required_parameter", "to"),
    ("/v1/audit/consistency", "to=1", "missing_required_parameter", "from"),
    ("/v1/audit/consistency", "from=0&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=-1&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=%2B1&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=01&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=1.0&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=%201&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=one&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=1&to=abc", "invalid_value", "to"),
    ("/v1/audit/consistency", "from=1&to=" + "9" * 40, "invalid_value", "to"),
    ("/v1/audit/consistency", "from=2&to=1", "invalid_value", "from"),
    ("/v1/audit/consistency", "from=1&to=1000", "invalid_value", "to"),
    ("/v1/audit/consistency", "from=1&to=1&to=1", "invalid_value", "to"),
    ("/v1/audit/consistency", "from=1&to=1&size=1", "unknown_parameter", "size"),
    ("/v1/audit/checkpoint", "format=xml", "invalid_value", "format"),
    ("/v1/audit/checkpoint", "format=", "invalid_value", "format"),
    ("/v1/audit/checkpoint", "from=1", "unknown_parameter", "from"),
    ("/v1/audit/entries/req_x", "phase=start", "invalid_value", "phase"),
    ("/v1/audit/entries/req_x", "phase=complete&phase=stream_end", "invalid_value", "phase"),
    ("/v1/audit/search", "since=yesterday", "invalid_value", "since"),
    ("/v1/audit/search", "until=2026-13-01", "invalid_value", "until"),
    ("/v1/audit/search", "since=0001-01-01T00:00:00%2B01:00", "invalid_value", "since"),  # overflows UTC
    ("/v1/audit/search", "decision=maybe", "invalid_value", "decision"),
    ("/v1/audit/search", "limit=0", "invalid_value", "limit"),
    ("/v1/audit/search", "limit=201", "invalid_value", "limit"),
    ("/v1/audit/search", "before=-1", "invalid_value", "before"),
    ("/v1/audit/search", "tenant=a&tenant=b", "invalid_value", "tenant"),
    ("/v1/audit/search", "text=ssn", "unknown_parameter", "text"),
]


@pytest.mark.parametrize(("path", "query", "code", "param"), BAD_QUERIES)
def test_bad_parameters_are_refused_naming_the_parameter(
    setup: Setup, path: str, query: str, code: str, param: str
) -> None:
    auditor = setup.key("auditor")
    setup.http.get("/v1/audit/checkpoint", headers=auditor)
    setup.http.get("/v1/audit/checkpoint", headers=auditor)  # a checkpoint of size 1 exists
    r = setup.http.get(f"{path}?{query}", headers=auditor)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    recorded = setup.audit.get(r.headers["x-request-id"])
    assert recorded is not None and recorded["status"] == 400


def test_search_finds_outcomes_newest_first_with_their_filters(setup: Setup) -> None:
    auditor, user = setup.key("auditor"), setup.key("user")
    refused = setup.http.get("/v1/audit/checkpoint", headers=user)  # a denied request of a user
    allowed = setup.http.get("/v1/audit/checkpoint", headers=auditor)
    r = setup.http.get("/v1/audit/search?decision=deny&since=2000-01-01", headers=auditor)
    assert r.status_code == 200, r.text
    found = r.json()
    assert [e["request_id"] for e in found["entries"]] == [refused.headers["x-request-id"]]
    assert found["entries"][0]["status"] == 403 and found["next_before"] is None
    every = setup.http.get("/v1/audit/search?limit=1", headers=auditor).json()
    assert [e["request_id"] for e in every["entries"]] == [r.headers["x-request-id"]]  # newest first
    assert every["next_before"] is not None
    older = setup.http.get(f"/v1/audit/search?limit=1&before={every['next_before']}", headers=auditor).json()
    assert [e["request_id"] for e in older["entries"]] == [allowed.headers["x-request-id"]]


def test_unknown_entries_are_404(setup: Setup) -> None:
    auditor = setup.key("auditor")
    r = setup.http.get("/v1/audit/entries/req_00000000000000000000000000000000", headers=auditor)
    assert r.status_code == 404 and r.json()["error"]["code"] == "entry_not_found"
    # an entry exists, but not of that phase
    r2 = setup.http.get(f"/v1/audit/entries/{r.headers['x-request-id']}?phase=stream_end", headers=auditor)
    assert r2.status_code == 404 and r2.json()["error"]["code"] == "entry_not_found"
    r3 = setup.http.get(f"/v1/audit/entries/{r.headers['x-request-id']}?phase=complete", headers=auditor)
    assert r3.status_code == 200 and r3.json()["phase"] == "complete"


@pytest.mark.parametrize(
    "path", ["/v1/audit/checkpoint", "/v1/audit/entries/x", "/v1/audit/consistency", "/v1/audit/search"]
)
def test_users_and_unauthenticated_callers_are_refused(setup: Setup, path: str) -> None:
    r = setup.http.get(path, headers=setup.key("user"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_not_permitted"
    denied = setup.audit.get(r.headers["x-request-id"])
    assert denied is not None and (denied["decision"], denied["status"]) == ("deny", 403)
    assert setup.http.get(path).status_code == 401


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_admins_and_auditors_are_allowed(setup: Setup, role: str) -> None:
    headers = setup.key(role)
    setup.http.get("/v1/audit/checkpoint", headers=headers)
    assert setup.http.get("/v1/audit/checkpoint", headers=headers).status_code == 200


def test_the_role_check_holds_under_a_policy_that_allows_everyone(tmp_path: Path) -> None:
    keys = ApiKeyStore(tmp_path / "keys.db", b"p" * 32)
    user, _ = keys.create("u", "user", "acme")
    with AuditLog(tmp_path / "audit.db", Ed25519PrivateKey.generate()) as audit:
        pipeline = Pipeline(keys=keys, policy=AllowAll(), audit=audit, workers={}, digest_key=b"d" * 32)
        with TestClient(_app(pipeline)) as http:
            r = http.get("/v1/audit/checkpoint", headers={"authorization": f"Bearer {user}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "auditor_role_required"
        recorded = audit.get(r.headers["x-request-id"])
        assert recorded is not None and recorded["reasons"] == ["auditor_role_required"]
    keys.close()


def test_a_sink_without_a_tree_serves_no_proofs(tmp_path: Path) -> None:
    keys = ApiKeyStore(tmp_path / "keys.db", b"p" * 32)
    auditor, _ = keys.create("a", "auditor", "acme")
    pipeline = Pipeline(keys=keys, policy=AllowAll(), audit=Sink(), workers={}, digest_key=b"d" * 32)
    with TestClient(_app(pipeline)) as http:
        r = http.get("/v1/audit/checkpoint", headers={"authorization": f"Bearer {auditor}"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_proofs_unavailable"
    keys.close()


# -- the pure parsers ---------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_tree_sizes_parse_from_their_decimal(n: int) -> None:
    assert parse_tree_size("from", str(n)) == n


@given(st.text(max_size=24))
def test_only_canonical_positive_decimals_are_tree_sizes(text: str) -> None:
    canonical = re.fullmatch(r"[1-9][0-9]{0,19}", text) is not None
    try:
        parse_tree_size("to", text)
    except InvalidRequest as exc:
        assert not canonical and exc.param == "to" and exc.code == "invalid_value"
    else:
        assert canonical


def test_query_parsing() -> None:
    assert parse_query([("from", "1"), ("to", "2")], ("from", "to")) == {"from": "1", "to": "2"}
    assert parse_query([], ("phase",)) == {}
    with pytest.raises(InvalidRequest) as unknown:
        parse_query([("x", "1")], ())
    assert (unknown.value.code, unknown.value.param) == ("unknown_parameter", "x")
    assert consistency_range({"from": "3", "to": "3"}, 3) == (3, 3)
    with pytest.raises(InvalidRequest) as empty_log:
        consistency_range({"from": "1", "to": "1"}, 0)
    assert empty_log.value.param == "to"
