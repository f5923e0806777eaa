"""The one error hierarchy of llmos.

    LlmosError
    ├── ConfigError                 a bad llmos.yaml or state directory (names file and key)
    ├── ApiError                    reaches HTTP clients as the OpenAI error envelope
    │   ├── InvalidRequest          400 invalid_request_error
    │   ├── AuthenticationFailed    401 authentication_error
    │   ├── PermissionDenied        403 permission_error (policy deny)
    │   ├── NotFound                404 not_found_error (unknown model)
    │   ├── Conflict                409 invalid_request_error (e.g. unloading a busy model)
    │   ├── PayloadTooLarge         413 invalid_request_error
    │   ├── ClientClosedRequest     499 (recorded only: the client is gone)
    │   ├── RateLimited             429 rate_limit_error (carries Retry-After)
    │   ├── InternalError           500 server_error (a bug or a failed generation; no detail)
    │   ├── ServiceUnavailable      503 service_unavailable_error (carries Retry-After)
    │   └── GatewayTimeout          504 timeout_error (the model did not answer in time)
    ├── PolicyError                 the policy engine failed or gave no usable decision
    ├── AuditError                  the audit trail could not be written or read
    ├── AuditVerifyError            an audit log failed offline verification
    ├── ExplanationError            an explanation record is malformed or altered (explain.errors)
    └── WorkerError                 a model worker problem
        ├── WorkerUnavailable       died, not ready, unhealthy or overloaded (-> 503)
        ├── WorkerTimeout           the worker hung on this request and was killed (-> 504)
        ├── WorkerRequestError      the worker refused this request (-> 400)
        └── ForkServerError         the fork server could not start, spawn, or be understood

Third-party errors are translated at module boundaries with ``raise ... from exc``.
Errors reach clients in exactly one place, ``gateway.api.errors``; their messages never carry
secrets, keys or prompt text.
"""

from __future__ import annotations


class LlmosError(Exception):
    """Base of every error llmos raises on purpose."""


class ConfigError(LlmosError):
    """Configuration or state directory is unusable; the message names the file and key."""


class ApiError(LlmosError):
    """An error with an HTTP status and an OpenAI error type and code."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.retry_after = retry_after


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "policy_denied"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"


class Conflict(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientClosedRequest(ApiError):
    """The client went away before the request was read (recorded as 499; nobody sees it)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InternalError(ApiError):
    status = 500
    type = "server_error"
    code = "internal_error"


class BadGateway(ApiError):
    """An upstream API failed or answered with something unusable (docs/upstreams.md)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class ServiceUnavailable(ApiError):
    status = 503
    type = "service_unavailable_error"
    code = "service_unavailable"


class GatewayTimeout(ApiError):
    status = 504
    type = "timeout_error"
    code = "model_timeout"


class PolicyError(LlmosError):
    """The policy engine failed, or its result was undefined or malformed."""

    def __init__(self, message: str, *, code: str = "policy_error") -> None:
        super().__init__(message)
        self.code = code


class AuditError(LlmosError):
    """The audit trail could not be written or read."""


class AuditVerifyError(LlmosError):
    """An audit log failed verification; names the first bad entry."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class WorkerError(LlmosError):
    """A model worker problem."""


class WorkerUnavailable(WorkerError):
    """The worker died, is not ready, or cannot take more requests."""

    def __init__(self, message: str, *, code: str = "worker_unavailable", retry_after: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class WorkerTimeout(WorkerError):
    """The worker sent nothing for this request within ``request_timeout_s``; it was killed."""

    def __init__(self, message: str, *, code: str = "model_timeout") -> None:
        super().__init__(message)
        self.code = code


class WorkerRequestError(WorkerError):
    """The worker refused this request (for example, the context is too long)."""

    def __init__(self, message: str, *, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code


class ForkServerError(WorkerError):
    """The worker fork server (``sandbox.forkserver``) failed to start, died mid-request, refused
    a spawn, or sent something unreadable; the supervisor counts it as a failed start and retries
    (a new fork server is started for the next spawn)."""
