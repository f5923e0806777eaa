"""OpenTelemetry traces of a real gateway, exported over OTLP/HTTP to a collector in this test
(a real HTTP server decoding the protobuf export requests): one request's trace shows each
stage as a child of the request's span, continues the caller's traceparent, carries no prompt
text or PII, and its trace id is in the request's audit entry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET_TEXT = "call jane.doe@example.com about the merger"


class Collector:
    """An OTLP/HTTP trace receiver: every span it was sent, as dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with lock:
                    outer.raw.append(body)
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                outer.spans.append(
                                    {
                                        "name": span.name,
                                        "trace_id": span.trace_id.hex(),
                                        "span_id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "attributes": {a.key: a.value for a in span.attributes},
                                    }
                                )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once its request span has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = [s for s in self.spans if s["trace_id"] == trace_id]
            if any(s["name"] == "llmos.request" for s in spans):
                time.sleep(0.3)  # children were exported before or with it; let a last batch land
                return [s for s in self.spans if s["trace_id"] == trace_id]
            time.sleep(0.05)
        raise AssertionError(f"no request span for trace {trace_id}")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Collector]]:
    collector = Collector()
    root: Path = tmp_path_factory.mktemp("tracing")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npii: {{detector: patterns}}\n"
        f"tracing: {{enabled: true, otlp_endpoint: 'http://127.0.0.1:{collector.port}/v1/traces',"
        " export_interval_ms: 50, trust_incoming: true}\n"
        "models:\n  - {name: echo, kind: echo}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw, collector
    collector.server.shutdown()
    collector.server.server_close()


def chat(gw: Gateway, headers: dict[str, str] | None = None) -> httpx.Response:
    r = httpx.post(
        gw.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.admin_key}", **(headers or {})},
        json={"model": "echo", "messages": [{"role": "user", "content": SECRET_TEXT}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def test_a_request_trace_shows_each_stage_and_is_named_in_its_audit_entry(
    traced: tuple[Gateway, Collector],
) -> None:
    gw, collector = traced
    r = chat(gw, {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    entry = audit_reader.entry(gw.home, r.headers["x-request-id"])
    assert entry is not None and entry["trace_id"] == CLIENT_TRACE  # the caller's trace, continued
    spans = collector.trace(CLIENT_TRACE)
    (request,) = [s for s in spans if s["name"] == "llmos.request"]
    assert request["parent"] == CLIENT_SPAN
    children = {s["name"] for s in spans if s["parent"] == request["span_id"]}
    assert {"llmos.auth", "llmos.policy", "llmos.pii", "llmos.worker", "llmos.audit"} <= children
    attrs = request["attributes"]
    assert attrs["llmos.route"].string_value == "chat.completions"
    assert attrs["llmos.model"].string_value == "echo"
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["llmos.request_id"].string_value == r.headers["x-request-id"]


def test_a_trace_starts_here_without_traceparent_and_carries_no_prompt_or_pii(
    traced: tuple[Gateway, Collector],
) -> None:
    gw, collector = traced
    r = chat(gw)
    entry = audit_reader.entry(gw.home, r.headers["x-request-id"])
    assert entry is not None and entry["trace_id"] and entry["trace_id"] != CLIENT_TRACE
    spans = collector.trace(entry["trace_id"])
    assert {s["name"] for s in spans} >= {"llmos.request", "llmos.worker"}
    exported = b"".join(collector.raw)
    for needle in (b"jane.doe", b"example.com", b"merger", gw.admin_key.encode()):
        assert needle not in exported
