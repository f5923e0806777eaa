"""The decision contract's JSON schemas (docs/schemas/) match what the gateway sends and what
the policy library answers, and the engine's parser refuses what the schema refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import PolicyError
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoSession, parse_decision
from gateway.policy.input import ModelInfo, RequestSummary, input_document, output_document
from gateway.types import Principal

ROOT = Path(__file__).resolve().parents[2]
INPUT = json.loads((ROOT / "docs/schemas/policy-input.schema.json").read_text())
DECISION = json.loads((ROOT / "docs/schemas/policy-decision.schema.json").read_text())

roles = st.lists(st.sampled_from(["admin", "user", "auditor", "contractor", "x"]), max_size=3)
findings = st.dictionaries(
    st.sampled_from(["US_SSN", "EMAIL_ADDRESS", "API_KEY", "CREDIT_CARD"]), st.integers(1, 5)
)


def _doc(
    role_list: list[str], found: dict[str, int], labels: list[str], endpoint: str, max_tokens: int | None
) -> dict[str, Any]:
    principal = Principal(
        id="key:0123456789abcdef", name="n", tenant="acme", roles=tuple(role_list), auth_method="api_key"
    )
    summary = RequestSummary(
        endpoint=endpoint,
        model=None if endpoint == "models.list" else "demo",
        max_tokens=max_tokens,
        message_count=2,
        estimated_input_tokens=10,
        parameters={"temperature": 0.7, "top_p": None, "stop_count": 0, "seed": None},
    )
    return input_document(
        principal,
        summary,
        time="2026-11-30T12:00:00.000+00:00",
        client_address="127.0.0.1",
        model=ModelInfo("demo", tuple(labels)),
        findings=found,
    )


@given(
    role_list=roles,
    found=findings,
    labels=st.lists(st.sampled_from(["internal", "tenant:acme", "tenant:globex"]), max_size=2),
    endpoint=st.sampled_from(["chat.completions", "completions", "models.list"]),
    max_tokens=st.one_of(st.none(), st.integers(1, 10_000)),
    out=st.one_of(st.none(), findings),
)
def test_gateway_documents_and_library_decisions_follow_the_schemas(
    role_list: list[str],
    found: dict[str, int],
    labels: list[str],
    endpoint: str,
    max_tokens: int | None,
    out: dict[str, int] | None,
) -> None:
    doc = _doc(role_list, found, labels, endpoint, max_tokens)
    query = "data.llmos.authz.decision"
    if out is not None:
        doc = output_document(doc, findings=out, completion_tokens=3, finish_reason=None)
        query = "data.llmos.output.decision"
    jsonschema.validate(doc, INPUT)
    value = SESSION.query(query, doc)
    jsonschema.validate(value, DECISION)
    parse_decision(value)  # and the engine accepts it


SESSION = RegoSession(load_bundle(ROOT / "policies"))


@pytest.mark.parametrize(
    "value",
    [
        {"allow": "yes"},
        {"reasons": []},
        {"allow": False, "reasons": [{"code": 1, "message": "m"}]},
        {"allow": True, "obligations": {"max_tokens": 0}},
        {"allow": True, "obligations": {"redact": {"entities": ["X"], "operator": "shred"}}},
        {"allow": True, "obligations": {"route": {"name": "demo"}}},
        {"allow": True, "obligations": {"explain": "verbose"}},
        {"allow": True, "obligations": {"explain": {"level": "full", "method": "saliency"}}},
        {"allow": True, "obligations": {"explain": {"steps": 0}}},
        {"allow": True, "obligations": {"explain": {"extra": 1}}},
        {"allow": True, "obligations": {"surprise": 1}},
        {"allow": True, "evidence": [{"rule": "a"}]},
        {"allow": True, "evidence": {"rule": "a", "detail": "b"}},
    ],
    ids=str,
)
def test_what_the_schema_refuses_the_engine_refuses(value: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, DECISION)
    with pytest.raises(PolicyError) as err:
        parse_decision(value)
    assert err.value.code == "policy_malformed"
