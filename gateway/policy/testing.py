"""Run the Rego unit tests of a bundle (``*_test.rego``, rules named ``test_*``) with regopy.

A test passes when its rule evaluates to ``true``. rego-cpp (regopy 1.5.2) quirks: it supports
``with input.x as ...`` but not ``with input as ...``, and a rule reference used as a ``with``
value can evaluate wrongly; bind it to a local variable first (see policies/authz_test.rego).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle
from gateway.policy.engine import RegoSession

_TEST_RULE_RE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)


@dataclass(frozen=True)
class PolicyTestResult:
    file: str
    name: str
    passed: bool
    error: str | None = None


def run_policy_tests(bundle: PolicyBundle) -> list[PolicyTestResult]:
    session = RegoSession(bundle, include_tests=True)
    results: list[PolicyTestResult] = []
    for test_file in bundle.tests:
        names = sorted(set(_TEST_RULE_RE.findall(test_file.source)))
        try:
            values = session.query(f"data.{test_file.package}")
        except PolicyError as exc:
            results.extend(PolicyTestResult(test_file.path, n, False, str(exc)) for n in names)
            continue
        for name in names:
            passed = isinstance(values, dict) and values.get(name) is True
            results.append(
                PolicyTestResult(test_file.path, name, passed, None if passed else "rule is not true")
            )
    return results


def failed_tests(bundle: PolicyBundle) -> list[PolicyTestResult]:
    return [r for r in run_policy_tests(bundle) if not r.passed]
