"""deploy/grafana: the dashboard is valid Grafana JSON whose queries name only metrics that a
gateway exports (checked against the metrics registry itself, so a renamed metric fails here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.limits.values import StoreFailures
from gateway.metrics import Metrics, StateCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "llmos-dashboard.json"


def exported_names() -> set[str]:
    """Every sample name a gateway's /metrics shows (state with every kind of value present)."""
    metrics = Metrics(models=["m"])
    for route in ("chat.completions",):
        metrics.request(route, "m", 200, "allow", 0.01)
    metrics.policy_seconds.labels("input").observe(0.001)
    metrics.policy_denials.labels("x").inc()
    metrics.findings("input", ["EMAIL_ADDRESS"])
    metrics.pii_scan_seconds.labels("input").observe(0.001)
    metrics.audit_append_seconds.observe(0.001)
    metrics.upstream_errors.labels("m", "upstream_error").inc()
    metrics.explanations_skipped.labels("overload").inc()
    state: dict[str, Any] = {
        "audit_queue": 0,
        "checkpoint_age_s": 1.0,
        "workers": {"m": {"state": "ready", "restarts": 0}},
        "devices": [{"device": "cpu", "budget_bytes": 1, "used_bytes": 0}],
        "models": {"m": {"loads": 1, "evictions": 0}},
        "explanation_queue": 0,
        "auth_failures": {"unknown_key": 1},
        "limit_store": StoreFailures(),
    }
    metrics.registry.register(StateCollector(lambda: state))
    text = generate_latest(metrics.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def test_the_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "llmos-gateway" and dash["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        for target in p.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")")


def test_every_query_names_metrics_the_gateway_exports() -> None:
    exported = exported_names()
    named = {
        m for p in panels() for t in p.get("targets", []) for m in re.findall(r"\bllmos_[a-z_]+", t["expr"])
    }
    assert named, "the dashboard queries nothing"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    # and it covers what issue 12 lists: requests, latency, policy, PII, audit, workers, fail-open
    for family in (
        "llmos_requests_total",
        "llmos_request_duration_seconds_bucket",
        "llmos_policy_denials_total",
        "llmos_pii_findings_total",
        "llmos_audit_append_seconds_bucket",
        "llmos_audit_queue_depth",
        "llmos_audit_checkpoint_age_seconds",
        "llmos_worker_state",
        "llmos_device_memory_bytes",
        "llmos_explanation_queue_depth",
        "llmos_upstream_errors_total",
        "llmos_fail_open_total",
    ):
        assert family in named, family
