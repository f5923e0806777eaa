"""Bad input over raw HTTP: always a 4xx OpenAI envelope, an audit entry, and a gateway that keeps serving."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

OK = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

CASES = [
    # (name, body bytes, status, code, param)
    ("malformed json", b'{"model": "demo", "messages": [', 400, "invalid_json", None),
    ("invalid utf-8", b'{"model": "demo\xff\xfe", "messages": []}', 400, "invalid_encoding", None),
    ("not an object", b"[1, 2, 3]", 400, "invalid_json", None),
    ("empty body", b"", 400, "invalid_json", None),
    (
        "missing messages",
        json.dumps({"model": "demo"}).encode(),
        400,
        "missing_required_parameter",
        "messages",
    ),
    (
        "missing model",
        json.dumps({"messages": OK["messages"]}).encode(),
        400,
        "missing_required_parameter",
        "model",
    ),
    ("model wrong type", json.dumps({**OK, "model": 5}).encode(), 400, "invalid_value", "model"),
    ("messages wrong type", json.dumps({**OK, "messages": "hi"}).encode(), 400, "invalid_value", "messages"),
    ("max_tokens float", json.dumps({**OK, "max_tokens": 1.5}).encode(), 400, "invalid_value", "max_tokens"),
    (
        "temperature string",
        json.dumps({**OK, "temperature": "1"}).encode(),
        400,
        "invalid_value",
        "temperature",
    ),
    ("stream string", json.dumps({**OK, "stream": "yes"}).encode(), 400, "invalid_value", "stream"),
    (
        "bad role",
        json.dumps({**OK, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
        400,
        "invalid_value",
        None,
    ),
    ("n > 1", json.dumps({**OK, "n": 3}).encode(), 400, "unsupported_value", "n"),
    (
        "unknown parameter",
        json.dumps({**OK, "frobnicate": True}).encode(),
        400,
        "unknown_parameter",
        "frobnicate",
    ),
    (
        "too many messages",
        json.dumps({**OK, "messages": [{"role": "user", "content": "x"}] * 300}).encode(),
        400,
        "too_many_messages",
        "messages",
    ),
    ("unknown model", json.dumps({**OK, "model": "nope"}).encode(), 404, "model_not_found", "model"),
    (
        "integer beyond digit limit",
        b'{"model": "demo", "messages": [], "seed": ' + b"9" * 5000 + b"}",
        400,
        "invalid_json",
        None,
    ),
    (
        "unpaired surrogate",
        b'{"model": "demo", "messages": [{"role": "user", "content": "\\ud800"}]}',
        400,
        "invalid_encoding",
        None,
    ),
    (
        "image content part",
        json.dumps(
            {
                **OK,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            }
        ).encode(),
        400,
        "unsupported_value",
        "messages.0.content.0.type",
    ),
    (
        "nested past the depth limit",
        b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "x": '
        + b"[" * 64
        + b"]" * 64
        + b"}",
        400,
        "invalid_json",
        None,
    ),
    (
        "tool_calls on a user message",
        json.dumps(
            {
                **OK,
                "messages": [
                    {
                        "role": "user",
                        "content": "x",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    }
                ],
            }
        ).encode(),
        400,
        "invalid_value",
        "messages.0.tool_calls",
    ),
    (
        "tool_choice without tools",
        json.dumps({**OK, "tool_choice": "auto"}).encode(),
        400,
        "invalid_value",
        "tool_choice",
    ),
    (
        "tiny temperature is greedy, not a crash",
        json.dumps({**OK, "temperature": 1e-45}).encode(),
        200,
        None,
        None,
    ),
    (
        "body over 1 MiB",
        b'{"model": "demo", "x": "' + b"a" * (1024 * 1024) + b'"}',
        413,
        "request_too_large",
        None,
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "code", "param"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clean_4xx_and_audited(
    gateway: Gateway, name: str, body: bytes, status: int, code: str, param: str | None
) -> None:
    headers = {"authorization": f"Bearer {gateway.admin_key}", "content-type": "application/json"}
    with gateway.http() as http:
        r = http.post("/v1/chat/completions", content=body, headers=headers)
        assert r.status_code == status, r.text
        rid = r.headers["x-request-id"]
        if status == 200:
            assert audit_reader.entry(gateway.home, rid) is not None
            return
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == code
        if param is not None:
            assert err["param"] == param
        assert "Traceback" not in r.text
        entry = audit_reader.entry(gateway.home, rid)
        assert entry is not None, "an authenticated bad request must be audited"
        assert entry["status"] == status
        assert entry["decision"] == "invalid"
        # ...and the gateway keeps serving.
        assert http.post("/v1/chat/completions", json=OK, headers=headers).status_code == 200


def test_unauthenticated_requests_are_refused_and_audited_without_the_credential(gateway: Gateway) -> None:
    bogus = "sk-llmos-0123456789abcdef-" + "x" * 43
    cases = [
        ({}, "auth_missing", "none"),
        ({"authorization": "Basic cXVpZXQtcGFzc3dvcmQtenE="}, "auth_missing", "none"),
        ({"authorization": f"Bearer {bogus}"}, "auth_invalid_api_key", "api_key"),
    ]
    with gateway.http() as http:
        for headers, reason, method in cases:
            r = http.post("/v1/chat/completions", json=OK, headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["type"] == "authentication_error"
            rid = r.headers["x-request-id"]
            deadline = time.monotonic() + 10
            while (entry := audit_reader.entry(gateway.home, rid)) is None and time.monotonic() < deadline:
                time.sleep(0.05)  # refusals are written off the request path
            assert entry is not None
            assert (entry["status"], entry["decision"], entry["reasons"]) == (401, "deny", [reason])
            assert (entry["principal_id"], entry["auth_method"]) == ("anonymous", method)
            # (A credential that could not occur by chance in the entry's hex digests.)
            assert bogus not in json.dumps(entry) and "cXVpZXQtcGFzc3dvcmQtenE" not in json.dumps(entry)


def test_a_client_that_leaves_mid_body_is_recorded(gateway: Gateway) -> None:
    def closed_requests() -> int:
        return sum(
            1 for e in audit_reader.entries(gateway.home) if e["status"] == 499 and e["phase"] == "complete"
        )

    before = closed_requests()
    host, port = gateway.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {gateway.admin_key}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"model": "de'
        )
    deadline = time.monotonic() + 10
    while closed_requests() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed_requests() == before + 1
    with gateway.http() as http:  # and the gateway keeps serving
        headers = {"authorization": f"Bearer {gateway.admin_key}"}
        assert http.post("/v1/chat/completions", json=OK, headers=headers).status_code == 200
