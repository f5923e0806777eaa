from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import PolicyError
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoEngine, RegoSession, parse_decision
from gateway.types import Decision, Evidence, ExplainOptions, Reason

QUERY = "data.t.decision"


@pytest.fixture
def engine_for(tmp_path: Path):
    def build(source: str, query: str = QUERY, data: str | None = None) -> RegoEngine:
        root = tmp_path / "pol"
        root.mkdir(exist_ok=True)
        (root / "p.rego").write_text(source)
        if data is not None:
            (root / "data.json").write_text(data)
        return RegoEngine(load_bundle(root), query)

    return build


GATE = """package t
import rego.v1

default allow := false
allow if input.user == "ok"

deny contains {"code": "not_ok", "message": "user is not ok"} if not allow

decision := {"allow": allow, "reasons": [r | some r in deny]}
"""


def test_allow_and_deny_with_reasons(engine_for) -> None:
    engine = engine_for(GATE)

    assert engine.decide({"user": "ok"}) == Decision(allow=True, reasons=())
    assert engine.decide({"user": "no"}) == Decision(
        allow=False, reasons=(Reason(code="not_ok", message="user is not ok"),)
    )


def test_input_does_not_leak_between_decisions(engine_for) -> None:
    engine = engine_for(GATE)

    assert engine.decide({"user": "ok"}).allow
    assert not engine.decide({}).allow
    assert engine.decide({"user": "ok"}).allow


def test_digest_and_bundle(engine_for) -> None:
    engine = engine_for(GATE)

    assert engine.digest == engine.bundle.digest
    assert engine.digest.startswith("sha256:")


def test_data_json_is_visible_to_policy(engine_for) -> None:
    source = 'package t\nimport rego.v1\ndecision := {"allow": input.user in data.allowed, "reasons": []}\n'
    engine = engine_for(source, data='{"allowed": ["alice"]}')

    assert engine.decide({"user": "alice"}).allow
    assert not engine.decide({"user": "bob"}).allow


def test_deny_without_reasons_gets_a_generic_reason(engine_for) -> None:
    engine = engine_for('package t\nimport rego.v1\ndecision := {"allow": false}\n')

    assert engine.decide({}) == Decision(
        allow=False, reasons=(Reason(code="denied", message="denied by policy"),)
    )


def _policy_error(engine: RegoEngine, policy_input: dict[str, Any]) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        engine.decide(policy_input)
    return info.value


@pytest.mark.parametrize(
    ("source", "query"),
    [
        (GATE, "data.t.nope"),
        (GATE, "data.nothere.decision"),
        ('package t\nimport rego.v1\ndecision := {"allow": true, "reasons": []} if input.x == 1\n', QUERY),
        ("package t\nimport rego.v1\ndecision := 1 / 0\n", QUERY),
    ],
    ids=["unknown-rule", "unknown-package", "rule-not-matched", "division-by-zero"],
)
def test_undefined_fails_closed(engine_for, source: str, query: str) -> None:
    engine = engine_for(source, query)  # undefined on an empty input is not a startup error

    assert _policy_error(engine, {"x": 2}).code == "policy_undefined"


@pytest.mark.parametrize(
    "decision",
    [
        '"allow"',
        "true",
        "{}",
        '{"allow": "yes", "reasons": []}',
        '{"allow": 1, "reasons": []}',
        '{"allow": null}',
        '{"allow": true, "reasons": "none"}',
        '{"allow": true, "reasons": {"code": "a", "message": "b"}}',
        '{"allow": false, "reasons": [{"message": "no code"}]}',
        '{"allow": false, "reasons": [{"code": "c"}]}',
        '{"allow": false, "reasons": [{"code": 1, "message": "m"}]}',
        '{"allow": false, "reasons": ["c"]}',
    ],
)
def test_malformed_results_fail_closed(engine_for, decision: str) -> None:
    engine = engine_for(f"package t\nimport rego.v1\ndecision := {decision}\n")

    assert _policy_error(engine, {}).code == "policy_malformed"


def test_conflicting_rules_fail_closed(engine_for) -> None:
    source = (
        'package t\nimport rego.v1\ndecision := {"allow": true} if input.a\n'
        'decision := {"allow": false} if input.b\n'
    )
    engine = engine_for(source)

    assert _policy_error(engine, {"a": True, "b": True}).code == "policy_error"


def test_a_syntax_error_fails_at_construction(engine_for) -> None:
    with pytest.raises(PolicyError) as info:
        engine_for("package t\nimport rego.v1\ndecision if {\n")

    assert info.value.code == "policy_invalid"
    assert str(info.value).startswith("p.rego: ")


def test_an_unparseable_query_fails_at_construction(engine_for) -> None:
    with pytest.raises(PolicyError) as info:
        engine_for(GATE, "data.t.decision ==")

    assert info.value.code != "policy_undefined"


def test_session_query_of_a_test_package_requires_include_tests(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(GATE)
    (tmp_path / "p_test.rego").write_text("package t_test\nimport rego.v1\ntest_a if { true }\n")
    bundle = load_bundle(tmp_path)

    assert RegoSession(bundle, include_tests=True).query("data.t_test.test_a") is True
    with pytest.raises(PolicyError) as info:
        RegoSession(bundle).query("data.t_test.test_a")
    assert info.value.code == "policy_undefined"


# parse_decision as a pure function: (raw value, expected Decision or the error code)
PARSE_OK = [
    ({"allow": True}, Decision(True)),
    ({"allow": True, "reasons": []}, Decision(True)),
    ({"allow": False, "reasons": []}, Decision(False, (Reason("denied", "denied by policy"),))),
    (
        {"allow": False, "reasons": [{"code": "a", "message": "x"}, {"code": "b", "message": "y"}]},
        Decision(False, (Reason("a", "x"), Reason("b", "y"))),
    ),
    (
        {"allow": True, "reasons": [{"code": "note", "message": "m", "extra": 1}]},
        Decision(True, (Reason("note", "m"),)),
    ),
    (
        {"allow": True, "evidence": [{"rule": "access.x", "detail": "why"}, {"rule": "b", "detail": ""}]},
        Decision(True, evidence=(Evidence("access.x", "why"), Evidence("b", ""))),
    ),
]

PARSE_BAD: list[Any] = [
    None,
    [],
    "allow",
    {},
    {"allow": "true"},
    {"allow": 0},
    {"allow": None},
    {"allow": True, "reasons": None},
    {"allow": True, "reasons": "x"},
    {"allow": True, "reasons": [None]},
    {"allow": False, "reasons": [{"code": "a"}]},
    {"allow": False, "reasons": [{"message": "a"}]},
    {"allow": False, "reasons": [{"code": "a", "message": 2}]},
    {"allow": True, "evidence": None},
    {"allow": True, "evidence": {"rule": "a", "detail": "b"}},
    {"allow": True, "evidence": [{"rule": "a"}]},
    {"allow": True, "evidence": [{"rule": 1, "detail": "b"}]},
    {"allow": True, "evidence": [{"rule": "a", "detail": "b"}] * 257},
]


@pytest.mark.parametrize(("value", "decision"), PARSE_OK)
def test_parse_decision(value: Any, decision: Decision) -> None:
    assert parse_decision(value) == decision


@pytest.mark.parametrize("value", PARSE_BAD)
def test_parse_decision_refuses_malformed(value: Any) -> None:
    with pytest.raises(PolicyError) as info:
        parse_decision(value)
    assert info.value.code == "policy_malformed"


def test_an_explain_obligation_may_name_method_steps_and_limits() -> None:
    raw = {"level": "full", "method": "integrated_gradients", "steps": 32, "max_output_tokens": 8}
    decision = parse_decision({"allow": True, "obligations": {"explain": raw}})
    assert decision.obligations.explain == "full"
    assert decision.obligations.explain_options == ExplainOptions(
        method="integrated_gradients", steps=32, max_output_tokens=8
    )
    assert parse_decision({"allow": True, "obligations": {"explain": {}}}).obligations.explain == "summary"
    assert (
        parse_decision({"allow": True, "obligations": {"explain": "none"}}).obligations.explain_options
        is None
    )


@pytest.mark.parametrize(
    "explain",
    [
        {"method": "saliency"},
        {"steps": 0},
        {"steps": True},
        {"max_prompt_tokens": 70000},
        {"level": "verbose"},
        {"level": "full", "extra": 1},
        "everything",
        3,
    ],
)
def test_a_malformed_explain_obligation_fails_closed(explain: Any) -> None:
    with pytest.raises(PolicyError) as info:
        parse_decision({"allow": True, "obligations": {"explain": explain}})
    assert info.value.code == "policy_malformed"
