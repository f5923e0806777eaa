"""gateway.policy.testcache and the isolated test run: a bundle that passed its Rego tests is not
tested again on the next start; a failing one always is; the tests run in a child process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy import reload
from gateway.policy.bundle import load_bundle
from gateway.policy.testcache import KEEP, PassedTests
from gateway.policy.testing import PolicyTestResult, failed_tests_isolated

POLICIES = Path(__file__).resolve().parents[3] / "policies"
SMALL = (
    "package llmos.small\nimport rego.v1\n\nanswer := 42\n",
    "package llmos.small_test\nimport rego.v1\n\ntest_answer if {\n\tdata.llmos.small.answer == 42\n}\n",
)


def small_bundle(root: Path, *, failing: bool = False) -> Path:
    root.mkdir()
    (root / "small.rego").write_text(SMALL[0])
    (root / "small_test.rego").write_text(SMALL[1] + ("\ntest_broken if {\n\t1 == 2\n}\n" if failing else ""))
    return root


def test_the_tests_run_in_a_child_process_and_report_failures(tmp_path: Path) -> None:
    assert failed_tests_isolated(load_bundle(small_bundle(tmp_path / "ok"))) == []
    failures = failed_tests_isolated(load_bundle(small_bundle(tmp_path / "bad", failing=True)))
    assert [(f.file, f.name) for f in failures] == [("small_test.rego", "test_broken")]


def test_a_bundle_changed_while_its_tests_ran_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(small_bundle(tmp_path / "p"))
    (tmp_path / "p" / "small.rego").write_text(SMALL[0] + "\nother := 1\n")  # after the digest was taken
    with pytest.raises(PolicyError, match="changed while their tests ran"):
        failed_tests_isolated(bundle)


def test_only_a_passing_bundle_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    outcome: list[PolicyTestResult] = []

    def fake(bundle: object) -> list[PolicyTestResult]:
        runs.append("ran")
        return list(outcome)

    monkeypatch.setattr(reload, "failed_tests_isolated", fake)
    bundle = load_bundle(small_bundle(tmp_path / "p"))
    outcome.append(PolicyTestResult("small_test.rego", "test_broken", False, "rule is not true"))
    assert reload.tested(bundle, tmp_path) != []
    assert reload.tested(bundle, tmp_path) != []  # a failure is never remembered
    outcome.clear()
    assert reload.tested(bundle, tmp_path) == []
    assert reload.tested(bundle, tmp_path) == []  # remembered: not run again
    assert len(runs) == 3


def test_the_record_is_per_digest_and_engine_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "policy-tests.json"
    passed = PassedTests(path, engine="regopy 1.5.2")
    passed.record("sha256:a")
    assert passed.known("sha256:a") and not passed.known("sha256:b")
    assert not PassedTests(path, engine="regopy 9.9").known("sha256:a")  # another engine: test again
    for n in range(KEEP + 3):
        passed.record(f"sha256:{n}")
    assert not passed.known("sha256:a") and passed.known(f"sha256:{KEEP + 2}")
    path.write_text("not json")
    assert not passed.known("sha256:a")  # an unreadable record means: test again


def test_the_shipped_library_passes_in_isolation(tmp_path: Path) -> None:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root, ignore=shutil.ignore_patterns("__*"))
    assert failed_tests_isolated(load_bundle(root)) == []
