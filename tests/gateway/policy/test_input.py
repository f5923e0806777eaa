from __future__ import annotations

import json

from gateway.policy.input import RequestSummary, policy_input
from gateway.types import Principal

PRINCIPAL = Principal(
    id="key:0123456789abcdef", name="alice", tenant="acme", roles=("user", "auditor"), auth_method="api_key"
)


def test_shape() -> None:
    summary = RequestSummary(
        endpoint="chat.completions", model="demo", max_tokens=64, stream=True, message_count=3
    )

    assert policy_input(PRINCIPAL, summary, "2025-01-01T00:00:00Z") == {
        "principal": {
            "id": "key:0123456789abcdef",
            "name": "alice",
            "tenant": "acme",
            "roles": ["user", "auditor"],
            "auth_method": "api_key",
        },
        "request": {
            "endpoint": "chat.completions",
            "model": "demo",
            "max_tokens": 64,
            "stream": True,
            "message_count": 3,
        },
        "time": "2025-01-01T00:00:00Z",
    }


def test_defaults_for_a_models_list() -> None:
    doc = policy_input(PRINCIPAL, RequestSummary(endpoint="models.list"), "t")

    assert doc["request"] == {
        "endpoint": "models.list",
        "model": None,
        "max_tokens": None,
        "stream": False,
        "message_count": 0,
    }


def test_is_plain_json() -> None:
    doc = policy_input(PRINCIPAL, RequestSummary(endpoint="completions", model="m", max_tokens=1), "t")

    assert json.loads(json.dumps(doc)) == doc


def test_never_carries_prompt_text() -> None:
    # A RequestSummary has no field for text, so nothing a client wrote except the model name
    # can reach policy: the document's leaves are the principal, the counters and the time.
    assert set(RequestSummary.__dataclass_fields__) == {
        "endpoint",
        "model",
        "max_tokens",
        "stream",
        "message_count",
    }
    doc = policy_input(
        PRINCIPAL, RequestSummary(endpoint="chat.completions", model="m", message_count=2), "t"
    )
    assert set(doc) == {"principal", "request", "time"}
    assert set(doc["request"]) == {"endpoint", "model", "max_tokens", "stream", "message_count"}
    assert set(doc["principal"]) == {"id", "name", "tenant", "roles", "auth_method"}
