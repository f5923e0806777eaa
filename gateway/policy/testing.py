"""Run the Rego unit tests of a bundle (``*_test.rego``, rules named ``test_*``) with regopy.

A test passes when its rule evaluates to ``true``. rego-cpp (regopy 1.5.2) quirks: it supports
``with input.x as ...`` but not ``with input as ...``, and a rule reference used as a ``with``
value can evaluate wrongly; bind it to a local variable first (see policies/authz_test.rego).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

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


def failed_tests_isolated(bundle: PolicyBundle, timeout_s: float = 600.0) -> list[PolicyTestResult]:
    """``failed_tests`` run in a child process: rego-cpp holds well over a gigabyte while it runs
    a policy library's tests, which the gateway process must not keep for its whole life. The
    child reads ``bundle.root`` and reports the digest it tested; a different one (the files
    changed meanwhile) raises PolicyError, so the results always belong to this bundle."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.policy.testing", str(bundle.root)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyError(
            f"{bundle.root}: the policy tests could not run ({exc.__class__.__name__})"
        ) from exc
    try:
        report = json.loads(proc.stdout)
        results = [PolicyTestResult(**r) for r in report["results"]]
        digest = report["digest"]
    except (ValueError, KeyError, TypeError) as exc:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PolicyError(f"{bundle.root}: the policy tests could not run ({tail[0]})") from exc
    if digest != bundle.digest:
        raise PolicyError(f"{bundle.root}: the policy files changed while their tests ran; load again")
    return [r for r in results if not r.passed]


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.policy.testing DIR``: the bundle's digest and test results as JSON."""
    from gateway.policy.bundle import load_bundle

    args = sys.argv[1:] if argv is None else argv
    try:
        bundle = load_bundle(Path(args[0]))
        results = run_policy_tests(bundle)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps({"digest": bundle.digest, "results": [asdict(r) for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
