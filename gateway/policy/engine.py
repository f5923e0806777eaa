"""Policy engines behind one interface. Today: the embedded rego-cpp interpreter (regopy).

Fail closed: an engine error, an undefined result or a result that is not
``{"allow": bool, "reasons": [{"code": str, "message": str}, ...]}`` raises ``PolicyError``;
the pipeline turns that into a denial. A later issue adds a remote OPA engine here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.types import Decision, Reason


class PolicyEngine(Protocol):
    @property
    def digest(self) -> str: ...

    def decide(self, policy_input: dict[str, Any]) -> Decision: ...


class RegoSession:
    """One regopy interpreter over a bundle. Not thread-safe: callers hold a lock."""

    _compiled: Any = None
    _compiled_query: str = ""

    def __init__(self, bundle: PolicyBundle, *, include_tests: bool = False) -> None:
        # Imported here so that importing llmos never loads the native library by accident.
        from regopy import Interpreter

        self._interp = Interpreter()
        for f in bundle.files:
            if f.is_test and not include_tests:
                continue
            try:
                self._interp.add_module(f.path, f.source)
            except Exception as exc:  # regopy raises its own RegoError; translate it
                raise PolicyError(f"{f.path}: {exc}", code="policy_invalid") from exc
        if bundle.data:
            self._interp.add_data_json(json.dumps(bundle.data))

    def compile(self, query: str) -> None:
        """Compile ``query`` once; ``query_compiled`` then skips recompiling (about 7x faster)."""
        try:
            bundle = self._interp.build(query)
        except Exception as exc:  # RegoError naming file and line
            raise PolicyError(f"policy does not compile: {exc}", code="policy_invalid") from exc
        if not bundle.ok():
            raise PolicyError("policy does not compile", code="policy_invalid")
        self._compiled = bundle
        self._compiled_query = query

    def query(self, query: str, policy_input: dict[str, Any] | None = None) -> Any:
        """Evaluate ``query``; returns the value, or raises PolicyError (undefined included)."""
        from regopy.rego_shared import rego_query

        return self._evaluate(query, policy_input, lambda: rego_query(self._interp._impl, query))

    def query_compiled(self, policy_input: dict[str, Any]) -> Any:
        """Evaluate the query given to ``compile`` over ``policy_input``."""
        from regopy.rego_shared import rego_bundle_query

        bundle = self._compiled
        return self._evaluate(
            self._compiled_query, policy_input, lambda: rego_bundle_query(self._interp._impl, bundle._impl)
        )

    def _evaluate(self, query: str, policy_input: dict[str, Any] | None, run: Callable[[], Any]) -> Any:
        # The low-level calls avoid regopy's Output class, which crashes (segfault) when a
        # failed output is turned into a string, and parses every result twice.
        from regopy.rego_shared import rego_free_output, rego_get_error, rego_output_ok, rego_output_string

        try:
            if policy_input is not None:
                self._interp.set_input_term(json.dumps(policy_input))
            out = run()
            try:
                if not out or not rego_output_ok(out):
                    raise PolicyError(
                        f"policy evaluation failed: {rego_get_error(self._interp._impl)}", code="policy_error"
                    )
                text = rego_output_string(out)
            finally:
                if out:
                    rego_free_output(out)
            if text == "undefined":
                raise PolicyError(f"{query} is undefined", code="policy_undefined")
            result = json.loads(text)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(
                f"policy evaluation failed: {exc.__class__.__name__}", code="policy_error"
            ) from exc
        values = result.get("expressions") if isinstance(result, dict) else None
        if not values:
            raise PolicyError(f"{query} is undefined", code="policy_undefined")
        return values[0]


def parse_decision(value: Any) -> Decision:
    """Turn the policy's raw result into a ``Decision``; anything malformed raises."""
    if not isinstance(value, dict) or not isinstance(value.get("allow"), bool):
        raise PolicyError("policy result has no boolean 'allow'", code="policy_malformed")
    raw_reasons = value.get("reasons", [])
    if not isinstance(raw_reasons, list):
        raise PolicyError("policy 'reasons' is not a list", code="policy_malformed")
    reasons = []
    for r in raw_reasons:
        if not (isinstance(r, dict) and isinstance(r.get("code"), str) and isinstance(r.get("message"), str)):
            raise PolicyError("each policy reason needs string 'code' and 'message'", code="policy_malformed")
        reasons.append(Reason(code=r["code"], message=r["message"]))
    if not value["allow"] and not reasons:
        reasons.append(Reason(code="denied", message="denied by policy"))
    return Decision(allow=value["allow"], reasons=tuple(reasons))


class RegoEngine:
    """The embedded engine: evaluates ``query`` over a bundle in-process."""

    def __init__(self, bundle: PolicyBundle, query: str) -> None:
        self._bundle = bundle
        self._query = query
        self._session = RegoSession(bundle)
        self._lock = threading.Lock()
        # Compile once, now: a broken module fails at startup, not on the first request, and
        # each decision skips recompilation.
        self._session.compile(query)

    @property
    def digest(self) -> str:
        return self._bundle.digest

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    def decide(self, policy_input: dict[str, Any]) -> Decision:
        with self._lock:
            value = self._session.query_compiled(policy_input)
        return parse_decision(value)
