"""gateway.tracing: off by default; a caller's traceparent is linked, not continued, unless
trusted; the trace id of a recorded span."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import TracingConfig
from gateway.tracing import NO_SPAN, Tracing, trace_id

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = {"traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"}


def test_off_by_default_nothing_is_recorded() -> None:
    tracing = Tracing()
    span = tracing.start_request("llmos.request", HEADERS, {})
    assert span is NO_SPAN and trace_id(span) is None and not tracing.enabled
    with tracing.child(span, "llmos.auth") as child:
        assert child is NO_SPAN


def spans_of(trust: bool) -> tuple[str | None, list[object]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True, trust_incoming=trust), exporter=exporter)
    root = tracing.start_request("llmos.request", HEADERS, {"llmos.route": "chat.completions"})
    with tracing.child(root, "llmos.policy", {"llmos.phase": "input"}):
        pass
    recorded = trace_id(root)  # as the audit record takes it, before the span ends
    root.end()
    tracing.shutdown()
    return recorded, list(exporter.get_finished_spans())


def test_a_callers_trace_is_linked_not_continued_by_default() -> None:
    own, spans = spans_of(trust=False)
    assert own is not None and own != CLIENT_TRACE  # the client cannot pick the audited trace id
    root = next(s for s in spans if s.name == "llmos.request")  # type: ignore[attr-defined]
    assert [f"{link.context.trace_id:032x}" for link in root.links] == [CLIENT_TRACE]
    child = next(s for s in spans if s.name == "llmos.policy")  # type: ignore[attr-defined]
    assert child.parent.span_id == root.context.span_id


def test_a_trusted_callers_trace_continues() -> None:
    own, _ = spans_of(trust=True)
    assert own == CLIENT_TRACE
