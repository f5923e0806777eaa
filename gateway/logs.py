"""Logging setup (docs/observability.md): plain text for a terminal, or one JSON object per line
(``server.log_format: json``) for a log pipeline, on stderr (stdout carries only the admin key).

Every request's outcome is one line from the ``llmos.access`` logger with its request id,
principal id (never a key or token), route, model, status, decision, reason codes and latency.
As a last guard, anything that looks like an llmos API key or a bearer token is masked in every
line, whatever logger wrote it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
ACCESS = logging.getLogger("llmos.access")
# Fields a record may carry (``extra=``) that the JSON line includes as members.
FIELDS = (
    "request_id",
    "principal_id",
    "tenant",
    "route",
    "model",
    "status",
    "decision",
    "reasons",
    "latency_ms",
    "trace_id",
)
_SECRETS = re.compile(r"(sk-llmos-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*)")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def mask(text: str) -> str:
    return _SECRETS.sub(lambda m: m.group(0)[:10] + "…[masked]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else MaskingFormatter(TEXT_FORMAT)


def configure(level: str, fmt: LogFormat) -> None:
    """The root logger: ``level``, one stderr handler in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def uvicorn_config(fmt: LogFormat) -> dict[str, Any]:
    """uvicorn's logging through the same handler style (its access lines included, on stderr)."""
    cls = "gateway.logs.JsonFormatter" if fmt == "json" else "gateway.logs.MaskingFormatter"
    options = {} if fmt == "json" else {"fmt": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"llmos": {"()": cls, **options}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "llmos", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }


def access(fields: dict[str, Any]) -> None:
    """One request's outcome (``llmos.access``, INFO; callers check ``ACCESS.isEnabledFor``
    first, so nothing is built for a level above it)."""
    ACCESS.info(
        "%s %s %s %s %dms",
        fields.get("route"),
        fields.get("status"),
        fields.get("decision"),
        fields.get("request_id"),
        fields.get("latency_ms", 0),
        extra=fields,
    )
