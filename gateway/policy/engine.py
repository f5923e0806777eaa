"""Policy engines behind one interface: the embedded rego-cpp interpreter (regopy) here, a
remote OPA server in ``gateway.policy.opa``.

A decision is asked for in one of two phases: ``input`` (before generation) and ``output``
(on the generated text). Fail closed: an engine error, an undefined result or a result that
is not a valid decision document (see docs/policy.md) raises ``PolicyError``; the pipeline
turns that into a denial.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, Literal, Protocol

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.cache import DecisionCache
from gateway.policy.deps import scan
from gateway.policy.regoinput import NeedsJson, to_input
from gateway.types import (
    EXPLAIN_LEVELS,
    EXPLAIN_METHODS,
    REDACT_OPERATORS,
    Decision,
    Evidence,
    ExplainLevel,
    ExplainOptions,
    Obligations,
    Reason,
    Redaction,
)

Phase = Literal["input", "output"]


class PolicyEngine(Protocol):
    @property
    def digest(self) -> str: ...

    @property
    def has_output_policy(self) -> bool: ...

    def decide(self, policy_input: dict[str, Any], phase: Phase = "input") -> Decision: ...


class RegoSession:
    """One regopy interpreter over a bundle. Not thread-safe: callers hold a lock."""

    def __init__(self, bundle: PolicyBundle, *, include_tests: bool = False) -> None:
        # Imported here so that importing llmos never loads the native library by accident.
        from regopy import Interpreter, LogLevel

        self._interp = Interpreter()
        self._interp.log_level = LogLevel.NONE  # else compile errors are printed on stdout
        self._compiled: dict[str, Any] = {}
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
            compiled = self._interp.build(query)
        except Exception as exc:  # RegoError naming file and line
            raise PolicyError(f"policy does not compile: {exc}", code="policy_invalid") from exc
        if not compiled.ok():
            raise PolicyError("policy does not compile", code="policy_invalid")
        self._compiled[query] = compiled

    def query(self, query: str, policy_input: dict[str, Any] | None = None) -> Any:
        """Evaluate ``query``; returns the value, or raises PolicyError (undefined included)."""
        from regopy.rego_shared import rego_query

        return self._evaluate(query, policy_input, lambda: rego_query(self._interp._impl, query))

    def query_compiled(self, query: str, policy_input: dict[str, Any]) -> Any:
        """Evaluate a query given to ``compile`` over ``policy_input``."""
        from regopy.rego_shared import rego_bundle_query

        compiled = self._compiled[query]
        return self._evaluate(
            query, policy_input, lambda: rego_bundle_query(self._interp._impl, compiled._impl)
        )

    def _evaluate(self, query: str, policy_input: dict[str, Any] | None, run: Callable[[], Any]) -> Any:
        # The low-level calls avoid regopy's Output class, which crashes (segfault) when a
        # failed output is turned into a string, and parses every result twice.
        from regopy.rego_shared import rego_free_output, rego_get_error, rego_output_ok, rego_output_string

        try:
            if policy_input is not None:
                # Built from Python values: several times faster than parsing JSON text.
                try:
                    self._interp.set_input(to_input(policy_input))
                except NeedsJson:
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
            result = json.loads(text, strict=False)  # rego-cpp leaves control characters unescaped
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


def _malformed(what: str) -> PolicyError:
    return PolicyError(f"malformed policy decision: {what}", code="policy_malformed")


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(f"{what} must be a list of strings")
    return tuple(value)


def parse_obligations(value: Any) -> Obligations:
    """Parse the ``obligations`` object of a decision; anything unknown or mistyped raises."""
    if value is None:
        return Obligations()
    if not isinstance(value, dict):
        raise _malformed("'obligations' must be an object")
    unknown = set(value) - {"max_tokens", "allowed_models", "redact", "route", "explain"}
    if unknown:
        raise _malformed(f"unknown obligation(s) {sorted(unknown)}")
    max_tokens = value.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _malformed("obligations.max_tokens must be a positive integer or null")
    models = value.get("allowed_models")
    allowed = None if models is None else _str_list(models, "obligations.allowed_models")
    redact = None
    raw_redact = value.get("redact")
    if raw_redact is not None:
        if not isinstance(raw_redact, dict) or set(raw_redact) - {"entities", "operator", "restore"}:
            raise _malformed("obligations.redact must be {entities, operator, restore}")
        operator = raw_redact.get("operator", "placeholder")
        if operator not in REDACT_OPERATORS:
            raise _malformed(f"obligations.redact.operator must be one of {', '.join(REDACT_OPERATORS)}")
        entities = _str_list(raw_redact.get("entities", []), "obligations.redact.entities")
        restore = raw_redact.get("restore", False)
        if not isinstance(restore, bool):
            raise _malformed("obligations.redact.restore must be a boolean")
        redact = Redaction(entities=entities, operator=operator, restore=restore) if entities else None
    route = value.get("route")
    route_model: str | None = None
    if route is not None:
        if not isinstance(route, dict) or not isinstance(route.get("model"), str) or set(route) - {"model"}:
            raise _malformed("obligations.route must be {model: string}")
        route_model = route["model"]
    explain, options = parse_explain(value.get("explain", "none"))
    return Obligations(
        max_tokens=max_tokens,
        allowed_models=allowed,
        redact=redact,
        route=route_model,
        explain=explain,
        explain_options=options,
    )


_EXPLAIN_LIMITS = {"steps": 1024, "max_prompt_tokens": 65536, "max_output_tokens": 65536}


def parse_explain(value: Any) -> tuple[ExplainLevel, ExplainOptions | None]:
    """``explain``: a level, or ``{level, method?, steps?, max_prompt_tokens?, max_output_tokens?}``."""
    options = None
    if isinstance(value, dict):
        unknown = set(value) - {"level", "method", *_EXPLAIN_LIMITS}
        if unknown:
            raise _malformed(f"unknown obligations.explain member(s) {sorted(unknown)}")
        method = value.get("method")
        if method is not None and method not in EXPLAIN_METHODS:
            raise _malformed(f"obligations.explain.method must be one of {', '.join(EXPLAIN_METHODS)}")
        numbers = {}
        for name, top in _EXPLAIN_LIMITS.items():
            n = value.get(name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top):
                raise _malformed(f"obligations.explain.{name} must be an integer in [1, {top}]")
            numbers[name] = n
        options = ExplainOptions(method=method, **numbers)
        value = value.get("level", "summary")
    if value not in EXPLAIN_LEVELS:
        raise _malformed(f"obligations.explain must be one of {', '.join(EXPLAIN_LEVELS)} or an object")
    return value, options


def parse_decision(value: Any) -> Decision:
    """Turn the policy's raw result into a ``Decision``; anything malformed raises."""
    if not isinstance(value, dict) or not isinstance(value.get("allow"), bool):
        raise _malformed("no boolean 'allow'")
    raw_reasons = value.get("reasons", [])
    if not isinstance(raw_reasons, list):
        raise _malformed("'reasons' is not a list")
    reasons = []
    for r in raw_reasons:
        if not (isinstance(r, dict) and isinstance(r.get("code"), str) and isinstance(r.get("message"), str)):
            raise _malformed("each reason needs string 'code' and 'message'")
        reasons.append(Reason(code=r["code"], message=r["message"]))
    if not value["allow"] and not reasons:
        reasons.append(Reason(code="denied", message="denied by policy"))
    return Decision(
        allow=value["allow"],
        reasons=tuple(reasons),
        obligations=parse_obligations(value.get("obligations")),
        evidence=parse_evidence(value.get("evidence", [])),
    )


MAX_EVIDENCE = 256


def parse_evidence(value: Any) -> tuple[Evidence, ...]:
    """The decision's ``evidence``: a list of ``{rule, detail}`` strings (at most 256)."""
    if not isinstance(value, list) or len(value) > MAX_EVIDENCE:
        raise _malformed(f"'evidence' must be a list of at most {MAX_EVIDENCE} items")
    items = []
    for e in value:
        if not (isinstance(e, dict) and isinstance(e.get("rule"), str) and isinstance(e.get("detail"), str)):
            raise _malformed("each evidence item needs string 'rule' and 'detail'")
        items.append(Evidence(rule=e["rule"], detail=e["detail"]))
    return tuple(items)


class RegoEngine:
    """The embedded engine: evaluates the input (and output) decision queries in-process.

    Decisions are cached (``cache_size`` entries, 0 for none) under the part of the input the
    policy set reads; see ``gateway.policy.cache``.
    """

    def __init__(
        self, bundle: PolicyBundle, query: str, output_query: str | None = None, *, cache_size: int = 4096
    ) -> None:
        self._bundle = bundle
        self.cache = DecisionCache(scan(f.source for f in bundle.files if not f.is_test), cache_size)
        self._queries: dict[Phase, str] = {"input": query}
        if output_query:
            self._queries["output"] = output_query
        self._session = RegoSession(bundle)
        self._lock = threading.Lock()
        # Compile once, now: a broken module fails at startup, not on the first request, and
        # each decision skips recompilation.
        for q in self._queries.values():
            self._session.compile(q)

    @property
    def digest(self) -> str:
        return self._bundle.digest

    @property
    def bundle(self) -> PolicyBundle:
        return self._bundle

    @property
    def has_output_policy(self) -> bool:
        return "output" in self._queries

    def decide(self, policy_input: dict[str, Any], phase: Phase = "input") -> Decision:
        query = self._queries.get(phase)
        if query is None:
            raise PolicyError(f"no {phase} policy is configured", code="policy_undefined")
        key = self.cache.key(phase, policy_input)
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        with self._lock:
            value = self._session.query_compiled(query, policy_input)
        decision = parse_decision(value)
        if key is not None:
            self.cache.put(key, decision)
        return decision

    def evaluate(self, query: str, policy_input: dict[str, Any]) -> Any:
        """Evaluate any query (uncompiled) over ``policy_input``: for ``llmos policy eval --explain``."""
        with self._lock:
            return self._session.query(query, policy_input)
