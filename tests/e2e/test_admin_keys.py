"""API key lifecycle through /admin/keys and the CLI, against the running gateway."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_an_admin_creates_uses_inspects_and_revokes_a_key(gateway: Gateway) -> None:
    admin = _auth(gateway.admin_key)
    with gateway.http() as http:
        r = http.post(
            "/admin/keys",
            headers=admin,
            json={"name": "svc-reports", "role": "user", "tenant": "acme", "rpm": 100, "expires_in_days": 30},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        key = created.pop("key")
        assert key.startswith("sk-llmos-") and created["status"] == "active" and created["expires_at"]
        assert audit_reader.entry(gateway.home, r.headers["x-request-id"]) is not None
        assert key not in json.dumps(audit_reader.entries(gateway.home))

        reply = gateway.client(key).chat.completions.create(**CHAT)
        assert reply.choices[0].message.content is not None

        shown = http.get(f"/admin/keys/{created['id']}", headers=admin).json()
        assert shown["name"] == "svc-reports" and shown["last_used_at"] is not None
        listed = http.get("/admin/keys", headers=admin).json()
        assert listed["object"] == "list"
        assert "svc-reports" in {k["name"] for k in listed["data"]}
        assert all("key" not in k and "key_hash" not in k for k in listed["data"])

        revoked = http.delete("/admin/keys/svc-reports", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        with pytest.raises(openai.AuthenticationError):
            gateway.client(key).chat.completions.create(**CHAT)
        # The CLI sees the same store.
        row = json.loads(gateway.cli("keys", "show", created["id"]).stdout)
        assert row["status"] == "revoked" and row["revoked_at"] == revoked.json()["revoked_at"]


def test_key_scopes_limit_models_and_endpoints(gateway: Gateway) -> None:
    key = gateway.create_key("scoped-e2e", "user", "--models", "demo", "--endpoints", "chat.completions")
    client = gateway.client(key)
    assert client.chat.completions.create(**CHAT).choices
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.completions.create(model="demo", prompt="hi", max_tokens=4)
    assert denied.value.code == "key_scope_endpoint"
    with pytest.raises(openai.PermissionDeniedError) as listing:
        client.models.list()
    assert listing.value.code == "key_scope_endpoint"

    other = gateway.create_key("scoped-models-e2e", "user", "--models", "elsewhere")
    with pytest.raises(openai.PermissionDeniedError) as wrong_model:
        gateway.client(other).chat.completions.create(**CHAT)
    assert wrong_model.value.code == "key_scope_model"
    assert [m.id for m in gateway.client(other).models.list()] == []  # it sees only its models


def test_only_admins_manage_keys(gateway: Gateway) -> None:
    user = gateway.create_key("not-an-admin", "user")
    with gateway.http() as http:
        for method, path in (
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("DELETE", "/admin/keys/admin"),
        ):
            r = http.request(method, path, headers=_auth(user), json={"name": "x", "role": "admin"})
            assert r.status_code == 403, (method, r.text)
            assert r.json()["error"]["code"] == "role_not_permitted"
        assert http.get("/admin/keys").status_code == 401
    assert gateway.cli("keys", "show", "x", check=False).returncode != 0  # nothing was created


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (json.dumps({"role": "user"}).encode(), 400, "missing_required_parameter"),
        (json.dumps({"name": "k1", "role": "user", "admin": True}).encode(), 400, "unknown_parameter"),
        (json.dumps({"name": "k2", "role": "user", "models": []}).encode(), 400, "invalid_request"),
        (json.dumps({"name": "k3", "role": "user", "endpoints": ["x"]}).encode(), 400, "invalid_request"),
        (json.dumps({"name": "k4", "role": "user", "rpm": "5"}).encode(), 400, "invalid_value"),
        (json.dumps({"name": "admin", "role": "user"}).encode(), 400, "key_exists"),
        (json.dumps({"name": "bad name", "role": "user"}).encode(), 400, "invalid_request"),
    ],
)
def test_bad_key_requests_get_clear_errors_and_create_nothing(
    gateway: Gateway, body: bytes, status: int, code: str
) -> None:
    with gateway.http() as http:
        before = http.get("/admin/keys", headers=_auth(gateway.admin_key)).json()["data"]
        r = http.post(
            "/admin/keys",
            content=body,
            headers={**_auth(gateway.admin_key), "content-type": "application/json"},
        )
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        after = http.get("/admin/keys", headers=_auth(gateway.admin_key)).json()["data"]
    assert len(after) == len(before)


def test_unknown_keys_are_404(gateway: Gateway) -> None:
    with gateway.http() as http:
        for method in ("GET", "DELETE"):
            r = http.request(method, "/admin/keys/no-such-key", headers=_auth(gateway.admin_key))
            assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"


def test_refused_credentials_are_counted_for_admins(gateway: Gateway) -> None:
    with gateway.http() as http:
        before = http.get("/admin/auth", headers=_auth(gateway.admin_key)).json()["auth_failures"]
        for _ in range(3):
            assert (
                http.get("/v1/models", headers=_auth("sk-llmos-0000000000000000-" + "y" * 43)).status_code
                == 401
            )
        status = http.get("/admin/auth", headers=_auth(gateway.admin_key))
        assert status.status_code == 200
        after = status.json()
        assert after["auth_failures"]["invalid_api_key"] == before.get("invalid_api_key", 0) + 3
        assert after["limits_backend"] == "memory"
        assert after["limits_store_failures"] == {
            "admit_errors": 0,
            "admitted_unlimited": 0,
            "charge_errors": 0,
        }
        user = gateway.create_key("auth-status-user", "user")
        assert http.get("/admin/auth", headers=_auth(user)).status_code == 403
