"""The pipeline's fail-closed rules, with faults injected at its seams (policy engine, audit sink)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import (
    AuditError,
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    PermissionDenied,
    PolicyError,
    RateLimited,
    ServiceUnavailable,
    WorkerRequestError,
    WorkerUnavailable,
)
from gateway.identity import AuthFailure, Caller
from gateway.keys import ApiKeyStore
from gateway.limits import LimitsConfig, LimitValues
from gateway.pipeline import AUTH_FAILURE_AUDIT_PER_MIN, DiscardAudit, Pipeline, RequestContext, translate
from gateway.policy.input import RequestSummary
from gateway.scanner import DisabledScanner, TextTooLarge
from gateway.types import AuditRecord, Decision, Finding, Obligations, Reason, Usage

SUMMARY = RequestSummary(endpoint="chat.completions", model="demo", max_tokens=16)


class Engine:
    """A policy engine whose answer (or failure) the test chooses."""

    digest = "sha256:test"
    has_output_policy = False

    def __init__(self, result: Decision | PolicyError) -> None:
        self.result = result
        self.inputs: list[dict[str, Any]] = []

    def decide(self, policy_input: dict[str, Any], phase: str = "input") -> Decision:
        self.inputs.append(policy_input)
        if isinstance(self.result, PolicyError):
            raise self.result
        return self.result


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.records: list[AuditRecord] = []

    async def append_async(self, record: AuditRecord) -> object:
        if self.fail:
            raise AuditError("disk full")
        self.records.append(record)
        return None


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "keys.db", b"p" * 32)


def _ctx(store: ApiKeyStore, rpm: int | None = None) -> RequestContext:
    _, info = store.create(f"k{rpm}", "user", "acme", rpm=rpm)
    return RequestContext(
        request_id="req_1", endpoint="chat.completions", caller=Caller(info.principal(), info)
    )


def _pipeline(store: ApiKeyStore, engine: Engine, sink: Sink, **options: Any) -> Pipeline:
    return Pipeline(keys=store, policy=engine, audit=sink, workers={}, digest_key=b"d" * 32, **options)


@pytest.mark.anyio
async def test_allow_records_the_decision(store: ApiKeyStore) -> None:
    engine, sink = Engine(Decision(allow=True)), Sink()
    pipe, ctx = _pipeline(store, engine, sink), _ctx(store)
    await pipe.authorize(ctx, SUMMARY)
    assert ctx.decision == "allow"
    assert engine.inputs[0]["principal"]["id"] == ctx.principal.id
    assert engine.inputs[0]["request"]["max_tokens"] == 16


@pytest.mark.anyio
async def test_deny_is_403_with_every_reason(store: ApiKeyStore) -> None:
    reasons = (Reason("a_code", "first reason"), Reason("b_code", "second reason"))
    pipe, ctx = _pipeline(store, Engine(Decision(allow=False, reasons=reasons)), Sink()), _ctx(store)
    with pytest.raises(PermissionDenied) as err:
        await pipe.authorize(ctx, SUMMARY)
    assert err.value.code == "a_code"
    assert "first reason [a_code]" in err.value.message and "second reason [b_code]" in err.value.message
    assert (ctx.decision, ctx.reasons) == ("deny", ("a_code", "b_code"))


@pytest.mark.parametrize(
    ("code", "error", "status"),
    [
        ("policy_error", ServiceUnavailable, 503),
        ("policy_undefined", PermissionDenied, 403),
        ("policy_malformed", PermissionDenied, 403),
    ],
)
@pytest.mark.anyio
async def test_policy_failure_denies(
    store: ApiKeyStore, code: str, error: type[Exception], status: int
) -> None:
    pipe, ctx = _pipeline(store, Engine(PolicyError("boom", code=code)), Sink()), _ctx(store)
    with pytest.raises(error) as err:
        await pipe.authorize(ctx, SUMMARY)
    assert err.value.status == status  # type: ignore[attr-defined]
    assert ctx.decision == "error"
    assert ctx.reasons == (code,)


@pytest.mark.anyio
async def test_rate_limit_comes_before_policy(store: ApiKeyStore) -> None:
    engine = Engine(Decision(allow=True))
    pipe, ctx = _pipeline(store, engine, Sink()), _ctx(store, rpm=1)
    await pipe.authorize(ctx, SUMMARY)
    with pytest.raises(RateLimited) as err:
        await pipe.authorize(ctx, SUMMARY)
    assert err.value.retry_after is not None and err.value.retry_after >= 1
    assert len(engine.inputs) == 1
    assert (ctx.decision, ctx.reasons) == ("deny", ("rate_limit_exceeded",))


@pytest.mark.anyio
async def test_tokens_used_are_charged_once_and_limit_the_next_request(store: ApiKeyStore) -> None:
    _, info = store.create("budget-key", "user", "acme", daily_tokens=200)
    pipe = _pipeline(store, Engine(Decision(allow=True)), Sink())

    def ctx(rid: str) -> RequestContext:
        return RequestContext(
            request_id=rid, endpoint="chat.completions", caller=Caller(info.principal(), info)
        )

    first = ctx("r1")
    await pipe.authorize(first, SUMMARY)
    first.usage = Usage(prompt_tokens=70, completion_tokens=60)
    await pipe.finish(first, 200)
    await pipe.fail(first, InvalidRequest("late"))  # already recorded: not charged again
    second = ctx("r2")
    await pipe.authorize(second, SUMMARY)  # 130 of 200 used
    second.usage = Usage(prompt_tokens=50, completion_tokens=50)
    await pipe.start_stream(second)  # a stream is charged at its end, not its start
    await pipe.end_stream(second, 200)
    with pytest.raises(RateLimited) as err:
        await pipe.authorize(ctx("r3"), SUMMARY)  # 230 of 200
    assert err.value.code == "daily_budget_exceeded"
    assert err.value.retry_after is not None and 1 <= err.value.retry_after <= 86400


@pytest.mark.anyio
async def test_a_token_debt_delays_the_next_request(store: ApiKeyStore) -> None:
    _, info = store.create("tpm-key", "user", "acme", tpm=100)
    pipe = _pipeline(store, Engine(Decision(allow=True)), Sink())
    first = RequestContext(
        request_id="r1", endpoint="chat.completions", caller=Caller(info.principal(), info)
    )
    await pipe.authorize(first, SUMMARY)
    first.usage = Usage(prompt_tokens=70, completion_tokens=60)  # 130 > 100: the bucket goes into debt
    await pipe.finish(first, 200)
    second = RequestContext(
        request_id="r2", endpoint="chat.completions", caller=Caller(info.principal(), info)
    )
    with pytest.raises(RateLimited) as err:
        await pipe.authorize(second, SUMMARY)
    assert err.value.code == "tokens_per_minute_exceeded"
    assert err.value.retry_after is not None and 1 <= err.value.retry_after <= 60


@pytest.mark.anyio
async def test_a_tenant_limit_is_shared_by_its_principals(store: ApiKeyStore) -> None:
    limits = LimitsConfig(tenants={"acme": LimitValues(rpm=2)})
    pipe = _pipeline(
        store,
        Engine(Decision(allow=True)),
        Sink(),
        limits=limits,
    )
    callers = [Caller(store.create(f"t{i}", "user", "acme")[1].principal()) for i in range(3)]
    for caller in callers[:2]:
        await pipe.authorize(
            RequestContext(request_id="r", endpoint="chat.completions", caller=caller), SUMMARY
        )
    with pytest.raises(RateLimited) as err:
        await pipe.authorize(
            RequestContext(request_id="r", endpoint="chat.completions", caller=callers[2]), SUMMARY
        )
    assert "tenant acme" in err.value.message
    other = Caller(store.create("globex-key", "user", "globex")[1].principal())
    await pipe.authorize(RequestContext(request_id="r", endpoint="chat.completions", caller=other), SUMMARY)


@pytest.mark.anyio
async def test_audit_failure_withholds_the_response(store: ApiKeyStore) -> None:
    sink = Sink(fail=True)
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    with pytest.raises(ServiceUnavailable) as err:
        await pipe.finish(ctx, 200)
    assert err.value.code == "audit_unavailable"
    # The failed write is not retried when the request is then recorded as failed.
    sink.fail = False
    await pipe.fail(ctx, err.value)
    assert sink.records == []


@pytest.mark.anyio
async def test_a_stream_is_refused_when_its_start_cannot_be_recorded(store: ApiKeyStore) -> None:
    sink = Sink(fail=True)
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    with pytest.raises(ServiceUnavailable) as err:
        await pipe.start_stream(ctx)
    assert err.value.code == "audit_unavailable"


@pytest.mark.anyio
async def test_a_stream_has_a_start_and_an_end_entry(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    await pipe.authorize(ctx, SUMMARY)
    await pipe.start_stream(ctx)
    assert await pipe.end_stream(ctx, 200) is True
    await pipe.fail(ctx, InvalidRequest("late"))  # already complete: nothing more
    assert [(r.phase, r.status, r.decision) for r in sink.records] == [
        ("stream_start", 200, "allow"),
        ("stream_end", 200, "allow"),
    ]
    assert {r.request_id for r in sink.records} == {"req_1"}


@pytest.mark.anyio
async def test_a_failed_stream_records_its_end_with_the_error(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    await pipe.start_stream(ctx)
    await pipe.fail(ctx, ServiceUnavailable("worker died", code="worker_crashed"))
    assert [(r.phase, r.status) for r in sink.records] == [("stream_start", 200), ("stream_end", 503)]


@pytest.mark.anyio
async def test_an_abandoned_stream_is_recorded_without_blocking(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    await pipe.start_stream(ctx)
    pipe.end_stream_detached(ctx, 499)
    pipe.end_stream_detached(ctx, 499)  # at most once
    assert len(pipe._detached) == 1
    await asyncio.gather(*pipe._detached)
    assert [(r.phase, r.status) for r in sink.records] == [("stream_start", 200), ("stream_end", 499)]


@pytest.mark.anyio
async def test_failed_requests_are_audited_once(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    await pipe.fail(ctx, InvalidRequest("bad"))
    await pipe.fail(ctx, InvalidRequest("bad again"))
    pipe.end_stream_detached(ctx, 499)
    assert [(r.status, r.decision, r.phase) for r in sink.records] == [(400, "invalid", "complete")]
    assert sink.records[0].policy_digest == "sha256:test"


@pytest.mark.anyio
async def test_an_audit_failure_on_a_failed_request_keeps_the_original_error(store: ApiKeyStore) -> None:
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), Sink(fail=True)), _ctx(store)
    await pipe.fail(ctx, InvalidRequest("bad"))  # logs, does not raise
    assert ctx.audit_state == "done"


def test_digests_are_keyed() -> None:
    a = Pipeline(keys=None, policy=Engine(Decision(True)), audit=Sink(), workers={}, digest_key=b"a" * 32)  # type: ignore[arg-type]
    b = Pipeline(keys=None, policy=Engine(Decision(True)), audit=Sink(), workers={}, digest_key=b"b" * 32)  # type: ignore[arg-type]
    assert a.digest(b"hello").startswith("hmac-sha256:")
    assert a.digest(b"hello") != b.digest(b"hello")
    assert a.digest(b"hello") == a.digest(b"hello")


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (WorkerRequestError("too long", code="context_length_exceeded"), 400, "context_length_exceeded"),
        (WorkerRequestError("oops", code="generation_failed"), 500, "generation_failed"),
        (WorkerRequestError("refused", code="canary_tripped"), 500, "canary_tripped"),
        (WorkerUnavailable("gone", code="worker_crashed"), 503, "worker_crashed"),
        (WorkerUnavailable("busy", code="model_overloaded"), 503, "model_overloaded"),
    ],
)
def test_worker_errors_map_to_http(exc: Exception, status: int, code: str) -> None:
    api = translate(exc)
    assert (api.status, api.code) == (status, code)
    assert api.retry_after is not None or status != 503


def test_a_tripped_canary_is_a_server_error_that_says_nothing_was_generated() -> None:
    api = translate(WorkerRequestError("from the worker", code="canary_tripped"))
    assert isinstance(api, InternalError)
    assert (api.status, api.type) == (500, "server_error")
    assert "canary value reached it; nothing was generated" in api.message


def test_generation_failure_hides_worker_detail() -> None:
    api = translate(WorkerRequestError("Traceback: secret path /root/x", code="generation_failed"))
    assert isinstance(api, InternalError)
    assert "Traceback" not in api.message


@pytest.mark.anyio
async def test_the_digest_recorded_is_the_one_that_decided(store: ApiKeyStore) -> None:
    engine, sink = Engine(Decision(allow=True)), Sink()
    pipe, ctx = _pipeline(store, engine, sink), _ctx(store)
    await pipe.authorize(ctx, SUMMARY)
    engine.digest = "sha256:refreshed-later"  # a remote engine refreshed in place mid-request
    pipe.policy = Engine(Decision(allow=True))  # and a reload swapped in another engine
    await pipe.finish(ctx, 200)
    assert sink.records[0].policy_digest == "sha256:test"


@pytest.mark.anyio
async def test_refused_credentials_are_audited_within_a_budget(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe = _pipeline(store, Engine(Decision(allow=True)), sink)
    refused = AUTH_FAILURE_AUDIT_PER_MIN + 5

    class FakeRequest:
        def __init__(self, rid: str) -> None:
            self.state = type("State", (), {"request_id": rid})()
            self.headers = {"authorization": "Bearer sk-llmos-0123456789abcdef-" + "z" * 43}
            self.scope: dict[str, object] = {}

    for i in range(refused):
        with pytest.raises(AuthFailure):
            await pipe.begin(FakeRequest(f"r{i}"), "chat.completions")  # type: ignore[arg-type]
    while pipe._detached:  # the entries are written off the request path
        await asyncio.sleep(0.01)

    assert len(sink.records) == AUTH_FAILURE_AUDIT_PER_MIN
    assert pipe.auth_failures == {"invalid_api_key": refused}
    assert pipe.auth_failures_unaudited == 5
    first = sink.records[0]
    assert (first.status, first.decision, first.reasons, first.principal_id, first.auth_method) == (
        401,
        "deny",
        ("auth_invalid_api_key",),
        "anonymous",
        "api_key",
    )
    assert "zzzz" not in repr(sink.records)


class FakeScanner:
    name = "fake"

    def find(self, text: str) -> list[Finding]:
        raise NotImplementedError

    def find_many(self, texts: Sequence[str]) -> list[list[Finding]]:
        return [self.find(t) for t in texts]

    def close(self) -> None:
        return None


class BrokenScanner(FakeScanner):
    name = "broken"

    def find(self, text: str) -> list[Finding]:
        raise RuntimeError("analyzer crashed")


class SlowScanner(FakeScanner):
    name = "slow"

    def find(self, text: str) -> list[Finding]:
        time.sleep(0.5)
        return []


class TooLargeScanner(FakeScanner):
    name = "strict"

    def find(self, text: str) -> list[Finding]:
        raise TextTooLarge(10)


@pytest.mark.anyio
@pytest.mark.parametrize("scanner", [BrokenScanner(), SlowScanner()], ids=["error", "timeout"])
async def test_a_scanner_failure_denies_with_503(store: ApiKeyStore, scanner: object) -> None:
    pipe = _pipeline(
        store,
        Engine(Decision(allow=True)),
        Sink(),
        scanner=scanner,  # type: ignore[arg-type]
        scan_timeout_s=0.1,
    )
    ctx = _ctx(store)
    with pytest.raises(ServiceUnavailable) as err:
        await pipe.scan(ctx, ["my card is 4111 1111 1111 1111"])
    assert (err.value.code, err.value.status) == ("pii_unavailable", 503)
    assert (ctx.decision, ctx.reasons) == ("error", ("pii_unavailable",))


@pytest.mark.anyio
async def test_a_text_too_long_to_scan_is_the_clients_413(store: ApiKeyStore) -> None:
    pipe = _pipeline(
        store,
        Engine(Decision(allow=True)),
        Sink(),
        scanner=TooLargeScanner(),
        scan_fail_open=frozenset({"chat.completions"}),  # not a scanner failure: never fails open
    )
    with pytest.raises(PayloadTooLarge) as err:
        await pipe.scan(_ctx(store), ["x" * 11])
    assert (err.value.status, err.value.code) == (413, "message_too_large")
    assert "10 characters" in err.value.message


@pytest.mark.anyio
async def test_a_fail_open_endpoint_goes_unscanned_and_says_so(store: ApiKeyStore) -> None:
    pipe = _pipeline(
        store,
        Engine(Decision(allow=True)),
        Sink(),
        scanner=BrokenScanner(),
        scan_fail_open=frozenset({"chat.completions"}),
    )
    ctx = _ctx(store)
    assert await pipe.scan(ctx, ["a", "b"]) == [[], []]
    assert ctx.reasons == ("pii_unscanned",)


@pytest.mark.anyio
async def test_findings_are_audited_without_their_values(store: ApiKeyStore) -> None:
    sink = Sink()
    pipe, ctx = _pipeline(store, Engine(Decision(allow=True)), sink), _ctx(store)
    texts = ["hello", "mail jane@example.com or 123-45-6789"]
    await pipe.scan(ctx, texts)
    ctx.output_findings = [Finding("PERSON", 0, 4, "SpacyRecognizer", 0.85)]
    await pipe.finish(ctx, 200)
    recorded = json.loads(sink.records[0].findings or "null")
    assert recorded["input"] == [
        {"text": 1, "type": "EMAIL_ADDRESS", "start": 5, "end": 21, "recognizer": "pattern", "score": 1.0},
        {"text": 1, "type": "US_SSN", "start": 25, "end": 36, "recognizer": "pattern", "score": 1.0},
    ]
    assert recorded["output"] == [
        {"type": "PERSON", "start": 0, "end": 4, "recognizer": "SpacyRecognizer", "score": 0.85}
    ]
    assert "jane" not in sink.records[0].findings  # type: ignore[operator]


@pytest.mark.anyio
async def test_with_policy_disabled_nothing_is_evaluated_and_the_entry_says_so(store: ApiKeyStore) -> None:
    engine, sink = Engine(Decision(allow=False, reasons=(Reason("nope", "never asked"),))), Sink()
    pipe, ctx = _pipeline(store, engine, sink, policy_enabled=False), _ctx(store)
    obligations = await pipe.authorize(ctx, SUMMARY)
    assert (ctx.decision, ctx.reasons, obligations) == ("allow", ("policy_disabled",), Obligations())
    assert engine.inputs == []
    assert pipe.output_decider(ctx) is None
    await pipe.finish(ctx, 200)
    assert sink.records[0].reasons == ("policy_disabled",)


@pytest.mark.anyio
async def test_with_policy_disabled_key_scopes_still_hold(store: ApiKeyStore) -> None:
    _, info = store.create("scoped", "user", "acme", models=("other",))
    ctx = RequestContext(request_id="r", endpoint="chat.completions", caller=Caller(info.principal(), info))
    pipe = _pipeline(store, Engine(Decision(allow=True)), Sink(), policy_enabled=False)
    with pytest.raises(PermissionDenied):
        await pipe.authorize(ctx, SUMMARY)


@pytest.mark.anyio
async def test_with_pii_disabled_nothing_is_scanned(store: ApiKeyStore) -> None:
    pipe = _pipeline(store, Engine(Decision(allow=True)), Sink(), scanner=DisabledScanner())
    ctx = _ctx(store)
    assert await pipe.scan(ctx, ["my card is 4111 1111 1111 1111", "x"]) == [[], []]


@pytest.mark.anyio
async def test_with_audit_disabled_entries_are_dropped(store: ApiKeyStore) -> None:
    pipe = _pipeline(store, Engine(Decision(allow=True)), DiscardAudit())  # type: ignore[arg-type]
    ctx = _ctx(store)
    await pipe.authorize(ctx, SUMMARY)
    await pipe.finish(ctx, 200)
    assert ctx.audit_state == "done"
