"""The default policy (policies/authz.rego) as a decision table, evaluated by the real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoEngine, RegoSession, parse_decision
from gateway.policy.input import ModelInfo, RequestSummary, input_document
from gateway.policy.testing import run_policy_tests
from gateway.types import Principal

POLICIES = Path(__file__).resolve().parents[2] / "policies"
QUERY = "data.llmos.authz.decision"
OUTPUT_QUERY = "data.llmos.output.decision"
WEEKDAY_NOON = "2026-11-30T12:00:00.000+00:00"  # a Monday
AUDIT_ENDPOINTS = ("audit.checkpoint", "audit.entries", "audit.consistency")
ENDPOINTS = ("chat.completions", "completions", "models.list", *AUDIT_ENDPOINTS)
LIMIT = 4096

# Who may call what, by role: the table the policy must implement.
PERMITTED = {
    "admin": {"chat.completions", "completions", "models.list", *AUDIT_ENDPOINTS},
    "user": {"chat.completions", "completions", "models.list"},
    "auditor": {"models.list", *AUDIT_ENDPOINTS},
}

ROLE_NOT_PERMITTED = "role_not_permitted"
UNKNOWN_ENDPOINT = "unknown_endpoint"
TOO_LARGE = "max_tokens_too_large"

MISSING = object()  # leave the field out of the input


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    return RegoEngine(load_bundle(POLICIES), QUERY, OUTPUT_QUERY)


def _input(roles: Any, endpoint: Any, max_tokens: Any) -> dict[str, Any]:
    principal: dict[str, Any] = {"id": "key:0123456789abcdef", "tenant": "t", "auth_method": "api_key"}
    if roles is not MISSING:
        principal["roles"] = roles
    request: dict[str, Any] = {"model": "demo", "stream": False, "message_count": 1}
    if endpoint is not MISSING:
        request["endpoint"] = endpoint
    if max_tokens is not MISSING:
        request["max_tokens"] = max_tokens
    return {"principal": principal, "request": request, "time": WEEKDAY_NOON}


# (roles, endpoint, max_tokens, allow, reason codes)
ROLE_ENDPOINT_ROWS = [
    (
        [role],
        endpoint,
        16,
        endpoint in PERMITTED[role],
        () if endpoint in PERMITTED[role] else (ROLE_NOT_PERMITTED,),
    )
    for role in PERMITTED
    for endpoint in ENDPOINTS
]

EDGE_ROWS = [
    # max_tokens at, over and around the limit
    (["user"], "chat.completions", LIMIT, True, ()),
    (["user"], "chat.completions", LIMIT + 1, False, (TOO_LARGE,)),
    (["user"], "completions", 100_000, False, (TOO_LARGE,)),
    (["admin"], "completions", LIMIT + 1, False, (TOO_LARGE,)),
    (["user"], "chat.completions", 4096.5, False, (TOO_LARGE,)),
    (["user"], "chat.completions", 1, True, ()),
    (["user"], "chat.completions", None, True, ()),
    (["user"], "chat.completions", MISSING, True, ()),
    (["user"], "models.list", LIMIT + 1, False, (TOO_LARGE,)),
    # both a role and a size problem: every reason is given
    (["auditor"], "chat.completions", LIMIT + 1, False, (ROLE_NOT_PERMITTED, TOO_LARGE)),
    # several roles: any permitted role is enough
    (["auditor", "user"], "chat.completions", 16, True, ()),
    (["auditor", "admin"], "completions", 16, True, ()),
    (["auditor", "auditor"], "completions", 16, False, (ROLE_NOT_PERMITTED,)),
    # unknown or odd roles
    ([], "chat.completions", 16, False, (ROLE_NOT_PERMITTED,)),
    (["root"], "chat.completions", 16, False, (ROLE_NOT_PERMITTED,)),
    (["Admin"], "models.list", None, False, (ROLE_NOT_PERMITTED,)),
    ("admin", "chat.completions", 16, False, (ROLE_NOT_PERMITTED,)),  # roles must be a list
    (None, "chat.completions", 16, False, (ROLE_NOT_PERMITTED,)),
    (MISSING, "chat.completions", 16, False, (ROLE_NOT_PERMITTED,)),
    (MISSING, "models.list", None, False, (ROLE_NOT_PERMITTED,)),
    # unknown endpoints, whatever the role
    (["admin"], "images.generate", 16, False, (UNKNOWN_ENDPOINT,)),
    (["user"], "embeddings", None, False, (UNKNOWN_ENDPOINT,)),
    (["admin"], "", 16, False, (UNKNOWN_ENDPOINT,)),
    (["admin"], "Chat.Completions", 16, False, (UNKNOWN_ENDPOINT,)),
    (["admin"], "chat.completions ", 16, False, (UNKNOWN_ENDPOINT,)),
    (["admin"], MISSING, 16, False, (UNKNOWN_ENDPOINT,)),
    (["admin"], "images.generate", LIMIT + 1, False, (TOO_LARGE, UNKNOWN_ENDPOINT)),
]

ROWS = ROLE_ENDPOINT_ROWS + EDGE_ROWS


def _id(row: tuple[Any, ...]) -> str:
    roles, endpoint, max_tokens = ("-" if v is MISSING else v for v in row[:3])
    return f"{roles}|{endpoint}|{max_tokens}"


@pytest.mark.parametrize(
    ("roles", "endpoint", "max_tokens", "allow", "codes"), ROWS, ids=[_id(r) for r in ROWS]
)
def test_decision_table(
    engine: RegoEngine, roles: Any, endpoint: Any, max_tokens: Any, allow: bool, codes: tuple[str, ...]
) -> None:
    decision = engine.decide(_input(roles, endpoint, max_tokens))

    assert decision.allow is allow
    assert sorted(r.code for r in decision.reasons) == sorted(codes)
    assert all(r.message for r in decision.reasons)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"principal": {}},
        {"request": {}},
        {"principal": {"roles": ["admin"]}},
        {"request": {"endpoint": "models.list"}},
        {"principal": {}, "request": {"endpoint": "chat.completions"}},
        {"principal": {"roles": ["admin"]}, "request": {}},
        {"principal": None, "request": None},
        {"principal": "admin", "request": "chat.completions"},
    ],
)
def test_missing_or_empty_input_denies(engine: RegoEngine, doc: dict[str, Any]) -> None:
    decision = engine.decide(doc)

    assert decision.allow is False
    assert decision.reasons


@pytest.mark.parametrize("endpoint", [None, 5, True, ["chat.completions"], {"chat.completions": True}])
def test_a_non_string_endpoint_is_denied_as_unknown(engine: RegoEngine, endpoint: Any) -> None:
    decision = engine.decide(_input(["admin"], endpoint, 16))

    assert decision.allow is False
    assert [r.code for r in decision.reasons] == [UNKNOWN_ENDPOINT]


@pytest.mark.parametrize("max_tokens", ["99999", [1], {"n": 1}, True])
def test_a_non_numeric_max_tokens_is_denied(engine: RegoEngine, max_tokens: Any) -> None:
    decision = engine.decide(_input(["admin"], "chat.completions", max_tokens))

    assert decision.allow is False
    assert "invalid_max_tokens" in [r.code for r in decision.reasons]


def test_compiled_and_uncompiled_evaluation_agree() -> None:
    # The engine evaluates a query compiled once at startup; the interpreter's plain query path
    # must give the very same decision for every row of the table.
    bundle = load_bundle(POLICIES)
    engine, session = RegoEngine(bundle, QUERY), RegoSession(bundle)
    for roles, endpoint, max_tokens, _, _ in ROWS:
        doc = _input(roles, endpoint, max_tokens)
        assert engine.decide(doc) == parse_decision(session.query(QUERY, doc)), doc


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("role", sorted(PERMITTED))
def test_the_gateways_own_input_document(engine: RegoEngine, role: str, endpoint: str) -> None:
    principal = Principal(
        id="key:0123456789abcdef", name="n", tenant="t", roles=(role,), auth_method="api_key"
    )
    summary = RequestSummary(endpoint=endpoint, model="demo", max_tokens=None, stream=True, message_count=2)

    decision = engine.decide(input_document(principal, summary, time=WEEKDAY_NOON, model=ModelInfo("demo")))

    assert decision.allow is (endpoint in PERMITTED[role])


def test_reason_messages_name_the_endpoint_and_limit(engine: RegoEngine) -> None:
    decision = engine.decide(_input(["auditor"], "chat.completions", LIMIT + 1))

    messages = {r.code: r.message for r in decision.reasons}
    assert messages == {
        ROLE_NOT_PERMITTED: "your role may not call chat.completions",
        TOO_LARGE: f"max_tokens may be at most {LIMIT}",
    }


def test_the_policys_own_tests_pass() -> None:
    results = run_policy_tests(load_bundle(POLICIES))

    assert len(results) >= 25
    assert [(r.name, r.error) for r in results if not r.passed] == []
    modules = {f.path.removesuffix(".rego") for f in load_bundle(POLICIES).modules}
    tested = {r.file.removesuffix("_test.rego") for r in results}
    assert tested >= modules - {"access"}  # access.rego is tested in authz_test.rego


def _full(
    roles: list[str] = ["user"],  # noqa: B006 - never mutated
    *,
    tenant: str = "acme",
    model: str = "demo",
    labels: tuple[str, ...] = (),
    findings: dict[str, int] | None = None,
    max_tokens: int | None = 64,
    time: str = WEEKDAY_NOON,
) -> dict[str, Any]:
    principal = Principal(
        id="key:0123456789abcdef", name="n", tenant=tenant, roles=tuple(roles), auth_method="api_key"
    )
    summary = RequestSummary(endpoint="chat.completions", model=model, max_tokens=max_tokens, message_count=1)
    return input_document(principal, summary, time=time, model=ModelInfo(model, labels), findings=findings)


# (case, input document, allow, reason codes, obligation checks)
LIBRARY_ROWS: list[tuple[str, dict[str, Any], bool, tuple[str, ...], dict[str, Any]]] = [
    ("user defaults", _full(), True, (), {"max_tokens": 2048, "allowed_models": None}),
    ("admin cap", _full(["admin"]), True, (), {"max_tokens": 4096}),
    (
        "contractor cap and models",
        _full(["contractor"]),
        True,
        (),
        {"max_tokens": 256, "allowed_models": ("demo",)},
    ),
    ("contractor other model", _full(["contractor"], model="big"), False, ("model_not_permitted",), {}),
    (
        "contractor at 06:59",
        _full(["contractor"], time="2026-11-30T06:59:59.000+00:00"),
        False,
        ("outside_time_window",),
        {},
    ),
    ("contractor at 07:00", _full(["contractor"], time="2026-11-30T07:00:00.000+00:00"), True, (), {}),
    (
        "contractor at 19:00",
        _full(["contractor"], time="2026-11-30T19:00:00.000+00:00"),
        False,
        ("outside_time_window",),
        {},
    ),
    (
        "contractor on Saturday",
        _full(["contractor"], time="2026-11-28T12:00:00.000+00:00"),
        False,
        ("outside_time_window",),
        {},
    ),
    ("contractor, Z time", _full(["contractor"], time="2026-11-30T12:00:00Z"), True, (), {}),
    ("contractor, bad time", _full(["contractor"], time="yesterday"), False, ("outside_time_window",), {}),
    ("user on Saturday night", _full(time="2026-11-28T23:00:00.000+00:00"), True, (), {}),
    ("own tenant's model", _full(labels=("tenant:acme",)), True, (), {}),
    ("other tenant's model", _full(labels=("tenant:globex",)), False, ("tenant_not_permitted",), {}),
    ("shared tenants", _full(tenant="globex", labels=("tenant:acme", "tenant:globex")), True, (), {}),
    ("SSN to external model", _full(findings={"US_SSN": 1}), False, ("national_id_to_external_model",), {}),
    ("SSN to internal model", _full(findings={"US_SSN": 1}, labels=("internal",)), True, (), {}),
    (
        "e-mail is redacted",
        _full(findings={"EMAIL_ADDRESS": 3}),
        True,
        (),
        {
            "redact_entities": (
                "PERSON",
                "EMAIL_ADDRESS",
                "PHONE_NUMBER",
                "CREDIT_CARD",
                "IBAN_CODE",
                "AWS_ACCESS_KEY",
                "PRIVATE_KEY",
                "API_KEY",
                "JWT",
                "LLMOS_API_KEY",
            )
        },
    ),
    (
        "several problems",
        _full(["contractor"], model="big", labels=("tenant:globex",), findings={"US_SSN": 1}),
        False,
        ("model_not_permitted", "national_id_to_external_model", "tenant_not_permitted"),
        {},
    ),
]


@pytest.mark.parametrize(
    ("doc", "allow", "codes", "checks"), [r[1:] for r in LIBRARY_ROWS], ids=[r[0] for r in LIBRARY_ROWS]
)
def test_library_decision_table(
    engine: RegoEngine, doc: dict[str, Any], allow: bool, codes: tuple[str, ...], checks: dict[str, Any]
) -> None:
    decision = engine.decide(doc)

    assert decision.allow is allow
    assert sorted(r.code for r in decision.reasons) == sorted(codes)
    o = decision.obligations
    for key, want in checks.items():
        got = o.redact.entities if key == "redact_entities" and o.redact else getattr(o, key)
        assert got == want, key


OUTPUT_ROWS = [
    ({}, True, (), ("US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS")),
    ({"US_SSN": 1}, True, (), ("US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS")),
    ({"PRIVATE_KEY": 1}, False, ("credential_in_output",), None),
    ({"AWS_ACCESS_KEY": 2, "EMAIL_ADDRESS": 1}, False, ("credential_in_output",), None),
    ({"API_KEY": 1}, False, ("credential_in_output",), None),
]


@pytest.mark.parametrize(("findings", "allow", "codes", "redacted"), OUTPUT_ROWS, ids=str)
def test_output_decision_table(
    engine: RegoEngine,
    findings: dict[str, int],
    allow: bool,
    codes: tuple[str, ...],
    redacted: tuple[str, ...] | None,
) -> None:
    from gateway.policy.input import output_document

    doc = output_document(_full(), findings=findings, completion_tokens=5, finish_reason="stop")
    decision = engine.decide(doc, "output")

    assert decision.allow is allow
    assert tuple(r.code for r in decision.reasons) == codes
    if redacted is not None:
        assert decision.obligations.redact is not None
        assert decision.obligations.redact.entities == redacted
