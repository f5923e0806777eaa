"""gateway.logs: JSON lines with the request's fields, and keys masked whatever logs them."""

from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter, MaskingFormatter, mask


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("llmos.access", logging.INFO, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


def test_a_json_line_has_the_request_fields() -> None:
    line = json.loads(
        JsonFormatter().format(
            record("done", request_id="r-1", principal_id="key:abc", status=200, decision="allow", latency_ms=12)
        )
    )
    assert line["level"] == "info" and line["logger"] == "llmos.access" and line["message"] == "done"
    assert (line["request_id"], line["principal_id"], line["status"], line["decision"], line["latency_ms"]) == (
        "r-1",
        "key:abc",
        200,
        "allow",
        12,
    )
    assert "model" not in line  # absent fields are left out


def test_keys_and_bearer_tokens_are_masked_in_every_format() -> None:
    key = "sk-llmos-" + "A1b2C3d4" * 4
    token = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    for text in (
        JsonFormatter().format(record(f"refused {key} and {token}")),
        MaskingFormatter("%(message)s").format(record(f"refused {key} and {token}")),
    ):
        assert key not in text and "eyJzdWIiOiJ4In0" not in text
        assert "[masked]" in text
    assert mask("nothing secret here") == "nothing secret here"
