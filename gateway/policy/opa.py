"""A remote OPA server as the policy engine (``policy.engine: opa``), over OPA's REST Data API.

Each decision is one ``POST {url}/v1/data/{path}`` with ``{"input": ...}``, made through
``opa_client.OpaClient`` (sync, ``requests``). The call runs on the request path, so it is
bounded by ``timeout_s`` from start to answer, connect included, and never retried. Fail closed:

    connection refused, timeout, HTTP error, non-JSON body  ->  PolicyError policy_error (503)
    a body without "result" (OPA: the document is undefined) ->  PolicyError policy_undefined (403)
    a result that is not a decision document               ->  PolicyError policy_malformed (403)

Messages name the server and the document path, never the policy input or the server's body.

The digest identifies the server's policy set: ``opa-sha256:`` over its modules' ids and
sources (``GET /v1/policies``), read at construction and on ``refresh()``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests
from opa_client import OpaClient  # type: ignore[import-untyped]
from urllib3.util import Timeout

from gateway.config import OpaConfig
from gateway.errors import ConfigError, PolicyError
from gateway.policy.engine import Phase, parse_decision
from gateway.types import Decision

log = logging.getLogger("llmos.gateway")

_URL_KEY = "policy.opa.url"
# Calls in flight at once; more wait their turn, within their own deadline.
_MAX_CALLS = 8


def _server_address(url: str) -> tuple[str, int, bool]:
    """``(host, port, ssl)`` of an ``http(s)://host[:port]`` URL, in the form OpaClient takes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{_URL_KEY}: expected http://host[:port] or https://host[:port], got {url!r}")
    if parts.username is not None or parts.password is not None:
        # Not echoed: it holds a credential.
        raise ConfigError(f"{_URL_KEY}: credentials in the URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        # OpaClient builds every URL as scheme://host:port/v1/...: a path prefix would be dropped.
        raise ConfigError(f"{_URL_KEY}: the URL may not have a path, query or fragment, got {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{_URL_KEY}: bad port in {url!r}") from exc
    ssl = parts.scheme == "https"
    host = parts.hostname
    if ":" in host:  # an IPv6 literal: OpaClient pastes host and port together
        host = f"[{host}]"
    return host, port if port is not None else (443 if ssl else 80), ssl


def _document_path(path: str, key: str) -> str:
    clean = path.strip("/")
    if not clean or any(c in clean for c in "?#") or ".." in clean.split("/"):
        raise ConfigError(f"{key}: expected a document path such as llmos/authz/decision, got {path!r}")
    return clean


def policies_digest(body: Any) -> str:
    """``opa-sha256:`` over the sorted (id, raw) pairs of a ``GET /v1/policies`` answer."""
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, list):
        raise ValueError("no 'result' list")
    pairs = []
    for module in result:
        if not (
            isinstance(module, dict)
            and isinstance(module.get("id"), str)
            and isinstance(module.get("raw"), str)
        ):
            raise ValueError("a policy without string 'id' and 'raw'")
        pairs.append((module["id"], module["raw"]))
    digest = hashlib.sha256()
    for policy_id, raw in sorted(pairs):
        # Hash each part first, so that no (id, raw) boundary can shift (as bundle digests do).
        digest.update(hashlib.sha256(policy_id.encode()).digest())
        digest.update(hashlib.sha256(raw.encode()).digest())
    return "opa-sha256:" + digest.hexdigest()


class OpaEngine:
    """A ``PolicyEngine`` that asks a remote OPA server for each decision."""

    def __init__(self, url: str, *, input_path: str, output_path: str | None, timeout_s: float) -> None:
        if not (isinstance(timeout_s, int | float) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError(
                f"policy.opa.timeout_s: must be a positive number of seconds, got {timeout_s!r}"
            )
        host, port, ssl = _server_address(url)
        self._url = url.rstrip("/")
        self._timeout_s = float(timeout_s)
        self._paths: dict[Phase, str] = {"input": _document_path(input_path, "policy.opa.input_path")}
        if output_path is not None:
            self._paths["output"] = _document_path(output_path, "policy.opa.output_path")
        # retries=0: OpaClient's default adapter retries connection errors and connect timeouts
        # (and 500s on GET) twice with backoff: 0.5 s became 2.1 s against a stuck listener.
        # Timeout(total=...): a plain float applies to connect and to every socket read apart;
        # `total` bounds connect plus the first wait for the answer.
        self._client = OpaClient(
            host=host, port=port, ssl=ssl, retries=0, timeout=Timeout(total=self._timeout_s)
        )
        # A server that trickles its answer (each read in time, the whole too late) still passes
        # urllib3's timeouts, so each call runs on a worker and the caller waits at most timeout_s.
        self._calls = ThreadPoolExecutor(max_workers=_MAX_CALLS, thread_name_prefix="llmos-opa")
        self._lock = threading.Lock()
        self.failures = 0
        self._digest = self._read_digest()

    @classmethod
    def from_config(cls, cfg: OpaConfig) -> OpaEngine:
        return cls(cfg.url, input_path=cfg.input_path, output_path=cfg.output_path, timeout_s=cfg.timeout_s)

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def has_output_policy(self) -> bool:
        return "output" in self._paths

    def refresh(self) -> str:
        """Read the server's policy list again (after a policy update); returns the new digest."""
        self._digest = self._read_digest()
        return self._digest

    def decide(self, policy_input: dict[str, Any], phase: Phase = "input") -> Decision:
        try:
            path = self._paths.get(phase)
            if path is None:
                raise PolicyError(f"no {phase} policy is configured", code="policy_undefined")
            return parse_decision(self._query(path, policy_input))
        except PolicyError:
            with self._lock:
                self.failures += 1
            raise

    def close(self) -> None:
        """Stop taking calls and drop the connections; a call still in flight is not waited for."""
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._client.close_connection()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (one HTTP exchange) with a hard deadline of ``timeout_s``."""
        try:
            future = self._calls.submit(fn)
        except RuntimeError as exc:  # after close()
            raise PolicyError(f"the engine for OPA at {self._url} is closed", code="policy_error") from exc
        try:
            return future.result(timeout=self._timeout_s)
        except TimeoutError as exc:
            future.cancel()  # if it never started; a late answer is dropped
            raise requests.Timeout("no answer before the deadline") from exc

    def _query(self, path: str, policy_input: dict[str, Any]) -> Any:
        # No message below may include the input or the server's body (which may echo it).
        where = f"OPA at {self._url} (data/{path})"
        try:
            body = self._call(lambda: self._client.query_rule(policy_input, path))
        except requests.Timeout as exc:
            raise PolicyError(
                f"{where} did not answer within {self._timeout_s:g}s", code="policy_error"
            ) from exc
        except requests.ConnectionError as exc:
            raise PolicyError(f"{where} is unreachable", code="policy_error") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PolicyError(f"{where} answered HTTP {status}", code="policy_error") from exc
        except (requests.RequestException, ValueError) as exc:  # JSONDecodeError is both
            raise PolicyError(
                f"{where} gave no usable answer ({exc.__class__.__name__})", code="policy_error"
            ) from exc
        if not isinstance(body, dict):
            raise PolicyError(f"{where} answered a non-object body", code="policy_error")
        if "result" not in body:
            raise PolicyError(f"{where}: the decision document is undefined", code="policy_undefined")
        return body["result"]

    def _list_policies(self) -> Any:
        # OpaClient has no call that returns every module's source at once (get_policies_list
        # keeps only the ids, and asks for /v1/policies/ with a trailing slash): use its session.
        response = self._client._session.get(
            f"{self._client.root_url}/policies", timeout=self._client.timeout
        )
        response.raise_for_status()
        return response.json()

    def _read_digest(self) -> str:
        try:
            return policies_digest(self._call(self._list_policies))
        except (requests.RequestException, ValueError) as exc:
            log.warning(
                "cannot list the policies of OPA at %s (%s); recording the policy digest as opa:%s",
                self._url,
                exc.__class__.__name__,
                self._url,
            )
            return "opa:" + self._url
