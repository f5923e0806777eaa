"""gateway.metrics: event counters with bounded labels, and the state collector's families."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.limits.values import StoreFailures
from gateway.metrics import Metrics, StateCollector


def families(metrics: Metrics) -> dict[str, list[Any]]:
    text = generate_latest(metrics.registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_unknown_model_names_are_one_label_value() -> None:
    metrics = Metrics(models=["echo"])
    for name in ("echo", "gpt-x", "a" * 200, None):
        metrics.request("chat.completions", name, 200, "allow", 0.01)
    models = {s.labels["model"] for s in families(metrics)["llmos_requests"]}
    assert models == {"echo", "other", "-"}  # a client cannot grow the label set


def test_fail_open_counters_exist_at_zero() -> None:
    samples = families(Metrics())["llmos_fail_open"]
    assert {(s.labels["what"], s.value) for s in samples if s.name == "llmos_fail_open_total"} == {
        ("pii_scan", 0.0),
        ("limits", 0.0),
    }


def test_state_is_read_at_scrape_time() -> None:
    state: dict[str, Any] = {
        "audit_queue": 3,
        "checkpoint_age_s": 1.5,
        "workers": {"echo": {"state": "ready", "restarts": 2}, "big": {"state": "unhealthy", "restarts": 5}},
        "devices": [{"device": "cpu", "budget_bytes": 100, "used_bytes": 40}],
        "models": {"echo": {"loads": 1, "evictions": 0}},
        "explanation_queue": 0,
        "policy_failures": 4,
        "auth_failures": {"unknown_key": 7},
        "limit_store": StoreFailures(admit_errors=1, admitted_unlimited=0, charge_errors=2),
    }
    metrics = Metrics()
    metrics.registry.register(StateCollector(lambda: state))
    got = families(metrics)
    assert [s.value for s in got["llmos_audit_queue_depth"]] == [3]
    worker = {(s.labels["model"], s.labels["state"]): s.value for s in got["llmos_worker_state"]}
    assert (
        worker[("echo", "ready")] == 1 and worker[("big", "unhealthy")] == 1 and worker[("big", "ready")] == 0
    )
    assert {s.labels["model"]: s.value for s in got["llmos_worker_restarts"]} == {"echo": 2, "big": 5}
    memory = {s.labels["kind"]: s.value for s in got["llmos_device_memory_bytes"]}
    assert memory == {"budget": 100, "used": 40}
    assert [s.value for s in got["llmos_policy_engine_failures"]] == [4]
    state["audit_queue"] = 9  # a later scrape sees the change
    assert [s.value for s in families(metrics)["llmos_audit_queue_depth"]] == [9]


def test_a_store_that_admits_without_limits_moves_the_fail_open_counter(tmp_path: Path) -> None:
    import time

    from gateway.keys import ApiKeyStore
    from gateway.limits.redis_store import RedisLimitStore
    from gateway.limits.values import Limits, Subject
    from gateway.pipeline import DiscardAudit, Pipeline
    from tests.gateway.api.test_audit import AllowAll

    store = RedisLimitStore.from_url("redis://127.0.0.1:1/0", on_store_error="allow_unlimited", timeout_s=0.2)
    keys = ApiKeyStore(tmp_path / "keys.db", b"p" * 32)
    pipeline = Pipeline(
        keys=keys,
        policy=AllowAll(),
        audit=DiscardAudit(),
        workers={},
        digest_key=b"d" * 32,
        limit_store=store,
    )
    try:
        store.admit([Subject("tenant", "acme", Limits(rpm=1))], time.time())  # nothing listens there
        samples = families(pipeline.metrics)["llmos_fail_open"]
        opened = {s.labels["what"]: s.value for s in samples if s.name == "llmos_fail_open_total"}
        assert opened == {"pii_scan": 0.0, "limits": 1.0}
    finally:
        store.close()
        keys.close()
