"""Prometheus metrics (docs/observability.md).

Two kinds:

- **Events**, counted where they happen: every request's outcome and latency (recorded with its
  audit record, so every outcome counts, refusals included), policy evaluation time and
  denials by reason code, PII findings by type and scan time, audit append latency, upstream
  errors, and fail-open events (which must stay at zero unless configuration allows them).
- **State**, read when Prometheus scrapes (:class:`StateCollector`): the audit queue and the age
  of its last checkpoint, worker and model states, restarts, loads and evictions, memory per
  device, the explanation queue, and counts the gateway keeps anyway (policy engine failures,
  refused credentials, rate-limit store errors).

Labels never carry prompt text, PII, keys or principal ids: routes are endpoint names, models
are configured model names (anything else is ``other``), finding types are detector names.
Each gateway has its own registry (no process-global state).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
OTHER = "other"  # a model name that is not configured (clients choose the string)


class Metrics:
    """The event metrics of one gateway, in its own registry."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._models = frozenset(models)
        r = self.registry
        self.requests = Counter(
            "llmos_requests", "Requests by outcome.", ["route", "model", "status", "decision"], registry=r
        )
        self.request_seconds = Histogram(
            "llmos_request_duration_seconds",
            "Time from the request's arrival to its audit record (for streams, to the end of the stream).",
            ["route", "model", "decision"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.policy_seconds = Histogram(
            "llmos_policy_evaluation_seconds",
            "Policy decision time.",
            ["phase"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.policy_denials = Counter(
            "llmos_policy_denials", "Requests denied by the policy, by reason code.", ["reason"], registry=r
        )
        self.pii_findings = Counter(
            "llmos_pii_findings", "Sensitive data found, by type.", ["type", "direction"], registry=r
        )
        self.pii_scan_seconds = Histogram(
            "llmos_pii_scan_seconds",
            "Sensitive-data detection time per request and direction.",
            ["direction"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.output_guard_seconds = Histogram(
            "llmos_output_guard_seconds",
            "Output scanning, redaction and decision time: per response (json) or per chunk (stream).",
            ["mode"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.stream_holdback_chars = Histogram(
            "llmos_stream_holdback_chars",
            "The most generated characters a stream held back at once (not yet scanned and settled).",
            buckets=(0, 16, 64, 256, 1024, 4096, 16384, 65536),
            registry=r,
        )
        self.audit_append_seconds = Histogram(
            "llmos_audit_append_seconds",
            "Time until a request's audit entry was durable.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "llmos_upstream_errors",
            "Failed calls to upstream APIs, by error code.",
            ["model", "code"],
            registry=r,
        )
        self.fail_open = Counter(
            "llmos_fail_open",
            "Requests let through although a safeguard failed (only where configuration allows it).",
            ["what"],
            registry=r,
        )
        self.explanations_skipped = Counter(
            "llmos_explanations_skipped", "Attributions not computed, by reason.", ["reason"], registry=r
        )
        self.fail_open.labels("pii_scan")  # present at zero from the start: alerts can watch them
        self.fail_open.labels("limits")

    def model_label(self, model: str | None) -> str:
        if not model:
            return "-"
        return model if model in self._models else OTHER

    def request(self, route: str, model: str | None, status: int, decision: str, seconds: float) -> None:
        label = self.model_label(model)
        self.requests.labels(route, label, str(status), decision).inc()
        self.request_seconds.labels(route, label, decision).observe(seconds)

    def findings(self, direction: str, types: Iterable[str]) -> None:
        for kind in types:
            self.pii_findings.labels(kind, direction).inc()


# -- state, read at scrape time ----------------------------------------------------------------


class Source(Protocol):
    """What the collector reads; the runtime gives it the live objects."""

    def __call__(self) -> dict[str, Any]: ...


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _counter(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


class StateCollector(Collector):
    """Gauges and counters computed from ``snapshot()`` when Prometheus scrapes.

    ``snapshot`` returns a dict with any of: ``audit_queue``, ``checkpoint_age_s``, ``workers``
    ({model: {state, restarts}}), ``devices`` (pool status devices), ``models`` (pool status
    models), ``explanation_queue``, ``explanation_failures``, ``policy_failures``,
    ``auth_failures`` ({reason: n}), ``limit_store`` (StoreFailures)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: described by what collect yields

    def collect(self) -> Iterator[Metric]:
        try:
            s = self._snapshot()
        except Exception:  # a busy or stopping event loop: the event counters still go out
            yield _gauge(
                "llmos_state_snapshot_ok", "0 when the gateway's state could not be read.", [], [([], 0.0)]
            )
            return
        yield _gauge(
            "llmos_state_snapshot_ok", "0 when the gateway's state could not be read.", [], [([], 1.0)]
        )
        if "audit_queue" in s:
            yield _gauge(
                "llmos_audit_queue_depth",
                "Audit appends waiting for the writer.",
                [],
                [([], s["audit_queue"])],
            )
        if s.get("checkpoint_age_s") is not None:
            yield _gauge(
                "llmos_audit_checkpoint_age_seconds",
                "Seconds since the audit log's last signed checkpoint.",
                [],
                [([], s["checkpoint_age_s"])],
            )
        workers = s.get("workers", {})
        states = sorted({w["state"] for w in workers.values()} | {"ready"})
        yield _gauge(
            "llmos_worker_state",
            "1 for each model's current worker state.",
            ["model", "state"],
            [
                ([m, st], 1.0 if w["state"] == st else 0.0)
                for m, w in sorted(workers.items())
                for st in states
            ],
        )
        yield _counter(
            "llmos_worker_restarts",
            "Worker restarts after crashes, per model.",
            ["model"],
            [([m], w.get("restarts", 0)) for m, w in sorted(workers.items())],
        )
        devices = s.get("devices", [])
        yield _gauge(
            "llmos_device_memory_bytes",
            "Memory budget and use per device (placement's accounting).",
            ["device", "kind"],
            [([str(d["device"]), k], d[f"{k}_bytes"]) for d in devices for k in ("budget", "used")],
        )
        models = s.get("models", {})
        yield _counter(
            "llmos_model_loads",
            "Model loads.",
            ["model"],
            [([m], v["loads"]) for m, v in sorted(models.items())],
        )
        yield _counter(
            "llmos_model_evictions",
            "Model evictions.",
            ["model"],
            [([m], v["evictions"]) for m, v in sorted(models.items())],
        )
        if "explanation_queue" in s:
            yield _gauge(
                "llmos_explanation_queue_depth",
                "Explanation records waiting for an attribution.",
                [],
                [([], s["explanation_queue"])],
            )
            yield _counter(
                "llmos_explanation_failures",
                "Explanation records that could not be recorded.",
                [],
                [([], s.get("explanation_failures", 0))],
            )
        yield _counter(
            "llmos_policy_engine_failures",
            "Decisions denied because the policy engine failed (fail closed).",
            [],
            [([], s.get("policy_failures", 0))],
        )
        yield _counter(
            "llmos_auth_failures",
            "Refused credentials, by reason.",
            ["reason"],
            [([r], n) for r, n in sorted(s.get("auth_failures", {}).items())],
        )
        store = s.get("limit_store")
        if store is not None:
            yield _counter(
                "llmos_limit_store_errors",
                "Rate-limit store calls that failed, by operation.",
                ["operation"],
                [(["admit"], store.admit_errors), (["charge"], store.charge_errors)],
            )


class Stopwatch:
    """``with Stopwatch() as w: ...``; then ``w.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._start
