"""OpaEngine against a fake OPA server (tests/gateway/policy/fake_opa.py).

The fake implements OPA's documented REST Data API and evaluates the repo's policies/ with the
embedded engine, so these tests prove that the remote path gives the same decisions as
RegoEngine over the same documents, and that every failure is closed. They do not run a real
OPA binary (none can be installed here).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import OpaConfig
from gateway.errors import ConfigError, PolicyError
from gateway.policy.bundle import PolicyBundle, load_bundle
from gateway.policy.engine import Phase, RegoEngine
from gateway.policy.opa import OpaEngine
from tests.gateway.policy.fake_opa import FakeOpaServer

POLICIES = Path(__file__).resolve().parents[3] / "policies"
INPUT_PATH = "llmos/authz/decision"
OUTPUT_PATH = "llmos/output/decision"
TIMEOUT_S = 0.5
WEEKDAY_NOON = "2026-11-30T12:00:00.000+00:00"  # a Monday


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return load_bundle(POLICIES)


@pytest.fixture(scope="module")
def server(bundle: PolicyBundle) -> Iterator[FakeOpaServer]:
    with FakeOpaServer(bundle) as srv:
        yield srv


@pytest.fixture(scope="module")
def rego(bundle: PolicyBundle) -> RegoEngine:
    return RegoEngine(bundle, "data.llmos.authz.decision", "data.llmos.output.decision")


@pytest.fixture
def fake(server: FakeOpaServer) -> Iterator[FakeOpaServer]:
    """The shared server, with its faults cleared before and after each test."""
    server.settings.reset()
    yield server
    server.settings.reset()


@pytest.fixture
def make_engine() -> Iterator[Any]:
    engines: list[OpaEngine] = []

    def build(
        url: str,
        *,
        input_path: str = INPUT_PATH,
        output_path: str | None = OUTPUT_PATH,
        timeout_s: float = TIMEOUT_S,
    ) -> OpaEngine:
        engine = OpaEngine(url, input_path=input_path, output_path=output_path, timeout_s=timeout_s)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(fake: FakeOpaServer, make_engine: Any) -> OpaEngine:
    result: OpaEngine = make_engine(fake.url)
    return result


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _doc(
    roles: list[str] | None = None,
    *,
    endpoint: str = "chat.completions",
    model: str = "demo",
    labels: tuple[str, ...] = (),
    tenant: str = "acme",
    max_tokens: int | None = 64,
    findings: dict[str, int] | None = None,
    time: str = WEEKDAY_NOON,
    clock: tuple[int, str] = (12, "Monday"),
    output_findings: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An input (or, with ``output_findings``, output) document shaped as the pipeline builds it."""
    counts = dict(findings or {})
    doc: dict[str, Any] = {
        "phase": "input",
        "principal": {
            "id": "key:0123456789abcdef",
            "name": "n",
            "tenant": tenant,
            "roles": ["user"] if roles is None else roles,
            "auth_method": "api_key",
        },
        "request": {
            "endpoint": endpoint,
            "model": model,
            "max_tokens": max_tokens,
            "stream": False,
            "message_count": 1,
            "estimated_input_tokens": 10,
            "parameters": {},
        },
        "model": {"name": model, "labels": list(labels)},
        "pii": {"findings": counts, "total": sum(counts.values())},
        "risk": {},
        "time": time,
        "clock": {"hour": clock[0], "weekday": clock[1]},
        "client": {"address": "127.0.0.1"},
    }
    if output_findings is not None:
        out = dict(output_findings)
        doc["phase"] = "output"
        doc["output"] = {
            "findings": out,
            "total": sum(out.values()),
            "completion_tokens": 5,
            "finish_reason": "stop",
        }
    return doc


# (case, phase, document, allow, reason codes): each must decide the same remotely and locally.
PARITY_ROWS: list[tuple[str, Phase, dict[str, Any], bool, tuple[str, ...]]] = [
    ("user allowed", "input", _doc(), True, ()),
    ("admin allowed", "input", _doc(["admin"]), True, ()),
    ("contractor obligations", "input", _doc(["contractor"]), True, ()),
    ("auditor may not generate", "input", _doc(["auditor"]), False, ("role_not_permitted",)),
    ("auditor lists models", "input", _doc(["auditor"], endpoint="models.list", max_tokens=None), True, ()),
    ("unknown endpoint", "input", _doc(["admin"], endpoint="images.generate"), False, ("unknown_endpoint",)),
    ("too many tokens", "input", _doc(max_tokens=100_000), False, ("max_tokens_too_large",)),
    (
        "contractor on Saturday",
        "input",
        _doc(["contractor"], time="2026-11-28T12:00:00.000+00:00", clock=(12, "Saturday")),
        False,
        ("outside_time_window",),
    ),
    ("other tenant's model", "input", _doc(labels=("tenant:globex",)), False, ("tenant_not_permitted",)),
    (
        "SSN to external model",
        "input",
        _doc(findings={"US_SSN": 1}),
        False,
        ("national_id_to_external_model",),
    ),
    ("e-mail is redacted", "input", _doc(findings={"EMAIL_ADDRESS": 2}), True, ()),
    (
        "contractor at 06:00",
        "input",
        _doc(["contractor"], time="2026-11-30T06:00:00.000+00:00", clock=(6, "Monday")),
        False,
        ("outside_time_window",),
    ),
    (
        "several problems",
        "input",
        _doc(["contractor"], model="big", labels=("tenant:globex",), findings={"US_SSN": 1}),
        False,
        ("model_not_permitted", "national_id_to_external_model", "tenant_not_permitted"),
    ),
    ("no roles at all", "input", _doc([]), False, ("role_not_permitted",)),
    ("clean output", "output", _doc(output_findings={}), True, ()),
    ("SSN in output is redacted", "output", _doc(output_findings={"US_SSN": 1}), True, ()),
    (
        "credential in output",
        "output",
        _doc(output_findings={"PRIVATE_KEY": 1}),
        False,
        ("credential_in_output",),
    ),
]


@pytest.mark.parametrize(
    ("phase", "doc", "allow", "codes"), [r[1:] for r in PARITY_ROWS], ids=[r[0] for r in PARITY_ROWS]
)
def test_same_decisions_as_the_embedded_engine(
    engine: OpaEngine,
    rego: RegoEngine,
    phase: Phase,
    doc: dict[str, Any],
    allow: bool,
    codes: tuple[str, ...],
) -> None:
    remote = engine.decide(doc, phase)

    assert remote == rego.decide(doc, phase)
    assert remote.allow is allow
    assert sorted(r.code for r in remote.reasons) == sorted(codes)
    assert engine.failures == 0


def test_obligations_come_through(engine: OpaEngine) -> None:
    contractor = engine.decide(_doc(["contractor"]))
    redacted = engine.decide(_doc(findings={"EMAIL_ADDRESS": 1}))
    output = engine.decide(_doc(output_findings={"US_SSN": 1}), "output")

    assert contractor.obligations.max_tokens == 256
    assert contractor.obligations.allowed_models == ("demo",)
    assert redacted.obligations.redact is not None
    assert {"PERSON", "EMAIL_ADDRESS", "CREDIT_CARD"} <= set(redacted.obligations.redact.entities)
    assert output.obligations.redact is not None
    assert output.obligations.redact.entities == ("US_SSN", "CREDIT_CARD", "EMAIL_ADDRESS")


def test_from_config(fake: FakeOpaServer) -> None:
    engine = OpaEngine.from_config(OpaConfig(url=fake.url, timeout_s=1.0))
    try:
        assert engine.has_output_policy
        assert engine.decide(_doc()).allow
        assert engine.digest.startswith("opa-sha256:")
    finally:
        engine.close()


def _policy_error(engine: OpaEngine, phase: Phase = "input") -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        engine.decide(_doc(), phase)
    return caught.value


def test_unreachable_server_fails_quickly(make_engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.WARNING, logger="llmos.gateway"):
        engine = make_engine(url, timeout_s=5.0)

    assert engine.digest == "opa:" + url
    assert "cannot list the policies" in caplog.text
    started = time.monotonic()
    err = _policy_error(engine)
    assert time.monotonic() - started < 2.0  # refused at once: no retries, no backoff
    assert err.code == "policy_error"
    assert "unreachable" in str(err)
    assert engine.failures == 1


def test_slow_server_times_out(engine: OpaEngine, fake: FakeOpaServer) -> None:
    fake.settings.sleep_s = 10.0

    started = time.monotonic()
    err = _policy_error(engine)
    elapsed = time.monotonic() - started

    assert err.code == "policy_error"
    assert "did not answer within" in str(err)
    assert TIMEOUT_S * 0.8 <= elapsed < 3.0  # gave up at about timeout_s, not after the sleep
    assert fake.settings.data_requests == 1  # and did not try again


def test_timeout_covers_connect_and_answer_together(engine: OpaEngine, fake: FakeOpaServer) -> None:
    # Several slow requests in a row each take about timeout_s: the bound holds per decision.
    fake.settings.sleep_s = 10.0
    started = time.monotonic()
    for _ in range(3):
        _policy_error(engine)
    assert time.monotonic() - started < 3 * TIMEOUT_S + 2.0
    assert engine.failures == 3


def test_trickling_answer_is_cut_at_the_deadline(engine: OpaEngine, fake: FakeOpaServer) -> None:
    # Every byte arrives well within the socket timeout; the whole answer would take seconds.
    fake.settings.fault = "trickle"

    started = time.monotonic()
    err = _policy_error(engine)
    elapsed = time.monotonic() - started
    fake.settings.reset()  # let the abandoned call finish

    assert err.code == "policy_error"
    assert TIMEOUT_S * 0.8 <= elapsed < TIMEOUT_S + 1.0
    assert engine.decide(_doc()).allow  # and the engine still works


@pytest.fixture
def stuck_listener() -> Iterator[str]:
    """A URL whose listener never accepts and whose backlog is full: connecting hangs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout_is_bounded_and_not_retried(stuck_listener: str, make_engine: Any) -> None:
    # OpaClient's default adapter retries a connect timeout twice with backoff (about 4x the
    # timeout); the engine must give up once, at about timeout_s.
    engine = make_engine(stuck_listener)
    assert engine.digest == "opa:" + stuck_listener

    started = time.monotonic()
    err = _policy_error(engine)
    elapsed = time.monotonic() - started

    assert err.code == "policy_error"
    assert TIMEOUT_S * 0.8 <= elapsed < TIMEOUT_S + 1.0


def test_closed_engine_fails_closed(fake: FakeOpaServer) -> None:
    engine = OpaEngine(fake.url, input_path=INPUT_PATH, output_path=None, timeout_s=TIMEOUT_S)
    engine.close()

    assert _policy_error(engine).code == "policy_error"
    assert engine.failures == 1


def test_server_recovers_after_a_timeout(engine: OpaEngine, fake: FakeOpaServer) -> None:
    fake.settings.sleep_s = 10.0
    _policy_error(engine)
    fake.settings.reset()

    assert engine.decide(_doc()).allow
    assert engine.failures == 1


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("http_500", "policy_error"),
        ("not_json", "policy_error"),
        ("undefined", "policy_undefined"),
        ("malformed", "policy_malformed"),
    ],
)
def test_faults_fail_closed(engine: OpaEngine, fake: FakeOpaServer, fault: Any, code: str) -> None:
    fake.settings.fault = fault

    err = _policy_error(engine)

    assert err.code == code
    assert engine.failures == 1
    assert fake.settings.data_requests == 1  # a 500 is not retried either


def test_undefined_document_path(fake: FakeOpaServer, make_engine: Any) -> None:
    engine = make_engine(fake.url, input_path="llmos/nothing/here")

    assert _policy_error(engine).code == "policy_undefined"


def test_errors_never_carry_the_input(
    engine: OpaEngine, fake: FakeOpaServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "4111-1111-1111-1111 alice@example.com"
    doc = _doc(["s3cret-role " + secret])
    messages = []
    with caplog.at_level(logging.DEBUG):
        for fault in ("http_500", "not_json", "undefined", "malformed"):
            fake.settings.fault = fault  # type: ignore[assignment]
            with pytest.raises(PolicyError) as caught:
                engine.decide(doc)
            messages.append(str(caught.value))
        fake.settings.reset()
        fake.settings.sleep_s = 10.0
        with pytest.raises(PolicyError) as caught:
            engine.decide(doc)
        messages.append(str(caught.value))

    assert all(secret not in m and "s3cret" not in m for m in messages)
    assert secret not in caplog.text


def test_no_output_path(fake: FakeOpaServer, make_engine: Any) -> None:
    engine = make_engine(fake.url, output_path=None)

    assert not engine.has_output_policy
    err = _policy_error(engine, "output")
    assert err.code == "policy_undefined"
    assert fake.settings.data_requests == 0  # never asked the server
    assert engine.failures == 1
    assert engine.decide(_doc()).allow


def test_digest_identifies_the_policy_set(engine: OpaEngine, fake: FakeOpaServer) -> None:
    first = engine.digest
    assert first.startswith("opa-sha256:")
    assert engine.refresh() == first  # same set, same digest

    fake.settings.policies = [*fake.settings.policies, ("extra.rego", "package extra\n")]
    changed = engine.refresh()
    assert changed != first
    assert engine.digest == changed

    fake.settings.policies = list(reversed(fake.settings.policies))
    assert engine.refresh() == changed  # order does not matter

    fake.settings.policies = fake.settings.policies[:-1]
    fake.settings.policies.append(("extra.rego", "package extra\n\nx := 1\n"))
    assert engine.refresh() not in (first, changed)  # the source counts, not only the ids


def test_digest_falls_back_when_the_list_fails(
    fake: FakeOpaServer, make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake.settings.fault = "http_500"
    with caplog.at_level(logging.WARNING, logger="llmos.gateway"):
        engine = make_engine(fake.url)

    assert engine.digest == "opa:" + fake.url
    assert "cannot list the policies" in caplog.text
    fake.settings.fault = None
    assert engine.refresh().startswith("opa-sha256:")


def test_failures_count_every_policy_error(engine: OpaEngine, fake: FakeOpaServer) -> None:
    engine.decide(_doc())
    for fault in ("http_500", "undefined", "malformed"):
        fake.settings.fault = fault  # type: ignore[assignment]
        _policy_error(engine)
    fake.settings.fault = None
    engine.decide(_doc())

    assert engine.failures == 3


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:8181",
        "ftp://opa:8181",
        "http://",
        "http://opa:8181/prefix",
        "http://opa:8181/?x=1",
        "http://user:pw@opa:8181",
        "http://opa:99999",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"policy\.opa\.url") as caught:
        OpaEngine(url, input_path=INPUT_PATH, output_path=None, timeout_s=1.0)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf")])
def test_bad_timeouts_are_config_errors(timeout_s: float) -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        OpaEngine("http://127.0.0.1:8181", input_path=INPUT_PATH, output_path=None, timeout_s=timeout_s)


@pytest.mark.parametrize("path", ["", "/", "a/../b", "a?b"])
def test_bad_paths_are_config_errors(path: str) -> None:
    with pytest.raises(ConfigError, match="input_path"):
        OpaEngine("http://127.0.0.1:8181", input_path=path, output_path=None, timeout_s=1.0)


def test_fake_server_contract(fake: FakeOpaServer) -> None:
    """The fake itself answers as OPA documents it (checked with a plain HTTP client)."""
    import httpx

    with httpx.Client(base_url=fake.url, timeout=5.0) as client:
        assert client.get("/health").json() == {}
        allowed = client.post(f"/v1/data/{INPUT_PATH}", json={"input": _doc()})
        undefined = client.post("/v1/data/llmos/nothing", json={"input": {}})
        policies = client.get("/v1/policies").json()["result"]

    assert allowed.status_code == 200
    assert allowed.json()["result"]["allow"] is True
    assert (undefined.status_code, undefined.json()) == (200, {})
    assert {p["id"] for p in policies} >= {"policies/authz.rego", "policies/output.rego"}
    assert all(isinstance(p["raw"], str) for p in policies)
