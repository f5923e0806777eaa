"""The decision cache: a cached engine decides exactly as an uncached one, only faster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import PolicyError
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import RegoEngine
from gateway.policy.input import ModelInfo, RequestSummary, input_document, output_document
from gateway.types import Principal

POLICIES = Path(__file__).resolve().parents[3] / "policies"
QUERY, OUTPUT_QUERY = "data.llmos.authz.decision", "data.llmos.output.decision"


@pytest.fixture(scope="module")
def engines() -> tuple[RegoEngine, RegoEngine]:
    bundle = load_bundle(POLICIES)
    return RegoEngine(bundle, QUERY, OUTPUT_QUERY), RegoEngine(bundle, QUERY, OUTPUT_QUERY, cache_size=0)


findings = st.dictionaries(
    st.sampled_from(["US_SSN", "EMAIL_ADDRESS", "CREDIT_CARD", "API_KEY", "PRIVATE_KEY"]),
    st.integers(0, 2),
    max_size=2,
)
requests = st.tuples(
    st.sampled_from([("user",), ("admin",), ("auditor",), ("contractor",), ("user", "contractor"), ()]),
    st.sampled_from(["acme", "globex"]),
    st.sampled_from(["chat.completions", "completions", "models.list", "images"]),
    st.sampled_from([ModelInfo("demo"), ModelInfo("x", ("internal",)), ModelInfo("y", ("tenant:acme",))]),
    st.sampled_from([None, 16, 300, 5000]),
    findings,
    findings,
    st.sampled_from(["2026-11-30T12:00:00", "2026-11-30T12:59:59", "2026-11-29T03:00:00"]),
    # Fields the example library does not read: they vary freely.
    st.integers(0, 9000),
    st.integers(1, 40),
    st.sampled_from(["10.0.0.1", "10.0.0.2", None]),
    st.floats(0, 2, allow_nan=False),
)


def documents(case: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    roles, tenant, endpoint, model, max_tokens, prompt, answer, when, est, count, addr, temp = case
    principal = Principal(id=f"key:{est:016x}", name="n", tenant=tenant, roles=roles, auth_method="api_key")
    summary = RequestSummary(
        endpoint=endpoint,
        model=model.name,
        max_tokens=max_tokens,
        message_count=count,
        estimated_input_tokens=est,
        parameters={"temperature": temp},
    )
    doc = input_document(
        principal,
        summary,
        time=f"{when}.{est % 1000:03d}+00:00",
        client_address=addr,
        model=model,
        findings=prompt,
    )
    return doc, output_document(doc, findings=answer, completion_tokens=count, finish_reason="stop")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(requests, min_size=1, max_size=6))
def test_cached_decisions_equal_evaluated_ones(
    engines: tuple[RegoEngine, RegoEngine], batch: list[Any]
) -> None:
    cached, uncached = engines
    for case in batch:
        doc, out = documents(case)
        assert cached.decide(doc) == uncached.decide(doc)
        assert cached.decide(out, "output") == uncached.decide(out, "output")


def test_the_example_library_is_cacheable_and_hits(engines: tuple[RegoEngine, RegoEngine]) -> None:
    assert engines[0].cache.enabled and not engines[1].cache.enabled
    cached = RegoEngine(load_bundle(POLICIES), QUERY, OUTPUT_QUERY)
    base = (("user",), "acme", "chat.completions", ModelInfo("demo"), 16, {}, {}, "2026-11-30T12:00:00")
    first = cached.decide(documents((*base, 10, 1, "10.0.0.1", 0.5))[0])
    again = cached.decide(documents((*base, 999, 7, "10.0.0.2", 1.5))[0])  # other time, size, address
    assert again is first
    assert (cached.cache.hits, cached.cache.misses) == (1, 1)


@pytest.fixture
def engine_for(tmp_path: Path):
    def build(source: str, size: int = 4096) -> RegoEngine:
        root = tmp_path / "pol"
        root.mkdir(exist_ok=True)
        (root / "p.rego").write_text("package t\nimport rego.v1\n" + source)
        return RegoEngine(load_bundle(root), "data.t.decision", cache_size=size)

    return build


DECISION = (
    'decision := {"allow": input.user == "ok", "reasons": [{"code": "c", "message": "m"}]} if input.user\n'
)


def test_failures_are_not_cached(engine_for) -> None:
    engine = engine_for(DECISION)
    for _ in range(2):
        with pytest.raises(PolicyError):
            engine.decide({"other": 1})  # decision undefined: denied, not remembered
    assert len(engine.cache) == 0 and engine.cache.hits == 0
    assert engine.decide({"user": "ok"}).allow


def test_only_read_fields_key_the_cache(engine_for) -> None:
    engine = engine_for(DECISION)
    assert engine.decide({"user": "ok", "t": 1}).allow
    assert engine.decide({"user": "ok", "t": 2}).allow
    assert not engine.decide({"user": "no", "t": 1}).allow
    assert (engine.cache.hits, engine.cache.misses, len(engine.cache)) == (1, 2, 2)


def test_the_cache_is_bounded_least_recently_used_first(engine_for) -> None:
    engine = engine_for(DECISION, size=2)
    for user in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        engine.decide({"user": user})
    assert len(engine.cache) == 2
    hits = engine.cache.hits
    engine.decide({"user": "a"})
    assert engine.cache.hits == hits + 1
    engine.decide({"user": "b"})
    assert engine.cache.hits == hits + 1


def test_a_policy_reading_the_clock_is_not_cached(engine_for) -> None:
    engine = engine_for(DECISION.replace('input.user == "ok"', "time.now_ns() > 0"))
    assert not engine.cache.enabled
    assert engine.cache.reason == "the policy calls time.now_ns"
    engine.decide({"user": "x"})
    engine.decide({"user": "x"})
    assert len(engine.cache) == 0


def test_a_policy_reading_the_whole_input_is_not_cached(engine_for) -> None:
    engine = engine_for(DECISION.replace("if input.user", 'if object.get(input, "user", false)'))
    assert not engine.cache.enabled
    assert engine.cache.reason == "the policy reads the whole input"


def test_size_zero_turns_it_off(engine_for) -> None:
    engine = engine_for(DECISION, size=0)
    engine.decide({"user": "ok"})
    engine.decide({"user": "ok"})
    assert not engine.cache.enabled and len(engine.cache) == 0


def test_unusual_documents_are_evaluated_not_cached(engine_for) -> None:
    engine = engine_for(DECISION)
    odd = {"user": {1: "a", "b": 2}}  # keys that do not sort: no canonical key, so just evaluate
    assert engine.decide(odd).allow is False
    assert engine.decide(odd).allow is False
    assert len(engine.cache) == 0 and engine.cache.misses == 0
