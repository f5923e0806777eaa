"""OpenTelemetry traces of requests (docs/observability.md); off unless ``tracing.enabled``.

One span per request (``llmos.request``), with a child span per stage: ``llmos.auth``,
``llmos.policy`` (per decision), ``llmos.pii`` (the input scan), ``llmos.worker``
(generation, to the outcome) and ``llmos.audit`` (the durable append). The trace id is
written into the request's audit entry (``trace_id``), so an auditor can go from an entry to
its trace and back. A caller's W3C ``traceparent`` is linked to, not continued, unless
``tracing.trust_incoming`` (for callers inside your tracing domain): otherwise a client could
choose the trace id written into the signed audit entry, or switch sampling on or off.

Attributes never carry prompt or answer text, PII, keys or principal ids: the route, the
configured model name, the outcome (status, decision, reason codes), token counts and the
request id. Spans are exported with OTLP over HTTP to ``tracing.otlp_endpoint`` only (the one
outbound connection this adds), in batches; an unreachable collector loses spans, never
requests. The gateway keeps its own tracer provider (no process-global state).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from gateway.config import TracingConfig

log = logging.getLogger("llmos.gateway.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
NO_SPAN: Span = NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)


class Tracing:
    """The gateway's tracer: a no-op one unless configured (then an SDK provider of its own)."""

    def __init__(self, config: TracingConfig | None = None, *, exporter: SpanExporter | None = None) -> None:
        self._provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self._trust_incoming = False
        if config is None or not config.enabled:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, timeout=config.export_timeout_s)
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=config.export_interval_ms)
        )
        self.tracer = self._provider.get_tracer("llmos")
        self._trust_incoming = config.trust_incoming

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def start_request(self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Span:
        """The request's span, a child of the caller's ``traceparent`` if it sent one."""
        if self._provider is None:
            return NO_SPAN
        incoming = _PROPAGATOR.extract(carrier={k.lower(): v for k, v in headers.items()})
        if self._trust_incoming:  # the caller's trace (and sampling decision) continues here
            return self.tracer.start_span(
                name, context=incoming, kind=trace.SpanKind.SERVER, attributes=dict(attributes)
            )
        # A trace of its own, linked to the caller's: a client cannot choose the trace id that
        # goes into the signed audit entry, nor switch sampling on or off.
        caller = trace.get_current_span(incoming).get_span_context()
        links = [trace.Link(caller)] if caller.is_valid else []
        return self.tracer.start_span(
            name,
            context=trace.set_span_in_context(NO_SPAN),
            kind=trace.SpanKind.SERVER,
            attributes=dict(attributes),
            links=links,
        )

    def start_child(self, parent: Span, name: str, attributes: Mapping[str, Any] | None = None) -> Span:
        if self._provider is None or not parent.is_recording():
            return NO_SPAN
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), attributes=dict(attributes or {})
        )

    @contextmanager
    def child(self, parent: Span, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        span = self.start_child(parent, name, attributes)
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    def shutdown(self) -> None:
        """Export what is buffered, then stop (bounded by the exporter's timeout)."""
        if self._provider is not None:
            self._provider.shutdown()


def trace_id(span: Span) -> str | None:
    """The span's trace id as 32 lowercase hex digits, if it is recorded (sampled)."""
    context = span.get_span_context()
    if not span.is_recording() or not context.is_valid:
        return None
    return f"{context.trace_id:032x}"
