"""The remote worker protocol: ``sandbox.protocol``'s length-prefixed JSON frames over a TLS
connection, with these differences from the local channel:

    gateway -> worker host
        {"type": "generate", "model": str, "id": str, ...}   a local generate frame, naming the model
        {"type": "cancel", "id": str}
        {"type": "ping", "id": int}
    worker host -> gateway
        token, done and explanation frames as locally
        {"type": "error", "id": str, "code": str, "message": str,
         "kind": "unavailable"|"timeout"|"request", "retry_after": int}
        {"type": "pong", "id": int, "models": {name: state}}

Many requests share one connection (their ids tell them apart); every generate gets exactly one
terminal frame (done or error), as locally.
"""

from __future__ import annotations

from typing import Literal

from gateway.errors import WorkerError, WorkerRequestError, WorkerTimeout, WorkerUnavailable
from sandbox.protocol import Frame, error_frame

ErrorKind = Literal["unavailable", "timeout", "request"]


def error_to_frame(wire_id: str, exc: WorkerError) -> Frame:
    """The error frame for a worker error raised on the host, with what the gateway needs to
    raise the same error (its class, code and Retry-After)."""
    kind: ErrorKind = "unavailable"  # the host could not serve it now (stopped, placement, ...): 503
    retry_after = getattr(exc, "retry_after", 1)
    if isinstance(exc, WorkerRequestError):
        kind, retry_after = "request", 0
    elif isinstance(exc, WorkerTimeout):
        kind, retry_after = "timeout", 0
    code = getattr(exc, "code", "generation_failed")
    frame = error_frame(wire_id, code if isinstance(code, str) else "generation_failed", str(exc))
    return {**frame, "kind": kind, "retry_after": retry_after if isinstance(retry_after, int) else 1}


def error_from_frame(frame: Frame) -> WorkerError:
    code = frame.get("code")
    code = code if isinstance(code, str) and 0 < len(code) <= 64 else "generation_failed"
    message = frame.get("message")
    message = message[:500] if isinstance(message, str) else "the remote model worker refused the request"
    kind = frame.get("kind")
    if kind == "unavailable":
        retry = frame.get("retry_after")
        return WorkerUnavailable(
            message, code=code, retry_after=retry if isinstance(retry, int) and retry > 0 else 1
        )
    if kind == "timeout":
        return WorkerTimeout(message, code=code)
    return WorkerRequestError(message, code=code)
