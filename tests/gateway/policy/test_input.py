"""The policy input documents: their shape, and that they never carry text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.policy.input import (
    ModelInfo,
    RequestSummary,
    clock,
    estimate_tokens,
    for_audit,
    input_document,
    output_document,
)
from gateway.types import Principal

PRINCIPAL = Principal(
    id="key:0123456789abcdef", name="alice", tenant="acme", roles=("user",), auth_method="api_key"
)
SUMMARY = RequestSummary(
    endpoint="chat.completions",
    model="demo",
    max_tokens=64,
    stream=True,
    message_count=3,
    estimated_input_tokens=12,
    parameters={"temperature": 0.5, "top_p": None, "stop_count": 1, "seed": 7},
)


def _doc(**kw: Any) -> dict[str, Any]:
    return input_document(PRINCIPAL, SUMMARY, time="2026-11-30T12:00:00.000+00:00", **kw)


def test_input_document_shape() -> None:
    doc = _doc(
        client_address="10.1.2.3",
        model=ModelInfo("demo", ("internal",)),
        findings={"US_SSN": 2, "EMAIL_ADDRESS": 1},
    )
    assert doc == {
        "phase": "input",
        "principal": {
            "id": "key:0123456789abcdef",
            "name": "alice",
            "tenant": "acme",
            "roles": ["user"],
            "auth_method": "api_key",
        },
        "request": {
            "endpoint": "chat.completions",
            "model": "demo",
            "max_tokens": 64,
            "stream": True,
            "message_count": 3,
            "estimated_input_tokens": 12,
            "parameters": {"temperature": 0.5, "top_p": None, "stop_count": 1, "seed": 7},
        },
        "model": {"name": "demo", "labels": ["internal"]},
        "pii": {"findings": {"US_SSN": 2, "EMAIL_ADDRESS": 1}, "total": 3},
        "risk": {},
        "time": "2026-11-30T12:00:00.000+00:00",
        "clock": {"hour": 12, "weekday": "Monday"},
        "client": {"address": "10.1.2.3"},
    }


def test_defaults_when_nothing_is_known() -> None:
    doc = _doc()
    assert doc["model"] is None
    assert doc["pii"] == {"findings": {}, "total": 0}
    assert doc["client"] == {"address": None}


def test_output_document_extends_the_input() -> None:
    base = _doc(findings={"EMAIL_ADDRESS": 1})
    out = output_document(base, findings={"API_KEY": 1}, completion_tokens=9, finish_reason="stop")
    assert out["phase"] == "output"
    assert out["output"] == {
        "findings": {"API_KEY": 1},
        "total": 1,
        "completion_tokens": 9,
        "finish_reason": "stop",
    }
    assert out["pii"] == base["pii"]
    assert base["phase"] == "input"  # the base is not modified


@pytest.mark.parametrize(
    ("address", "recorded"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),
        ("not-an-ip", None),
        (None, None),
    ],
)
def test_the_audit_copy_keeps_only_the_network(address: str | None, recorded: str | None) -> None:
    doc = _doc(client_address=address)
    assert for_audit(doc)["client"]["address"] == recorded
    assert doc["client"]["address"] == address


def test_no_text_fields() -> None:
    doc = json.dumps(_doc(findings={"US_SSN": 1}))
    assert "content" not in doc and "prompt" not in doc and "messages" not in doc


@pytest.mark.parametrize(("chars", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (4000, 1000)])
def test_token_estimate(chars: int, tokens: int) -> None:
    assert estimate_tokens(chars) == tokens


@pytest.mark.parametrize(
    ("time", "want"),
    [
        ("2026-11-30T12:00:00.000+00:00", {"hour": 12, "weekday": "Monday"}),
        ("2026-11-30T01:30:00Z", {"hour": 1, "weekday": "Monday"}),
        ("2026-11-30T01:30:00+02:00", {"hour": 23, "weekday": "Sunday"}),
        ("2026-11-30T01:30:00", None),  # no zone: refuse to guess
        ("yesterday", None),
    ],
)
def test_clock_is_utc(time: str, want: dict[str, Any] | None) -> None:
    assert clock(time) == want
