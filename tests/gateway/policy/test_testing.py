from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.bundle import load_bundle
from gateway.policy.testing import PolicyTestResult, failed_tests, run_policy_tests

MODULE = 'package demo\nimport rego.v1\nallow if input.user == "ok"\n'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "demo.rego").write_text(MODULE)
    return tmp_path


def test_passing_and_failing_tests(root: Path) -> None:
    (root / "demo_test.rego").write_text(
        "package demo_test\nimport rego.v1\nimport data.demo\n\n"
        'test_ok_allowed if {\n\tdemo.allow with input.user as "ok"\n}\n\n'
        'test_wrong if {\n\tdemo.allow with input.user as "no"\n}\n\n'
        "test_false if {\n\tfalse\n}\n\n"
        "helper := 1\n"
    )

    results = run_policy_tests(load_bundle(root))

    assert results == [
        PolicyTestResult("demo_test.rego", "test_false", False, "rule is not true"),
        PolicyTestResult("demo_test.rego", "test_ok_allowed", True),
        PolicyTestResult("demo_test.rego", "test_wrong", False, "rule is not true"),
    ]
    assert [r.name for r in failed_tests(load_bundle(root))] == ["test_false", "test_wrong"]


def test_tests_in_several_files(root: Path) -> None:
    (root / "a_test.rego").write_text("package a_test\nimport rego.v1\ntest_one if { true }\n")
    (root / "sub").mkdir()
    (root / "sub" / "b_test.rego").write_text("package b_test\nimport rego.v1\ntest_two if { 1 == 1 }\n")

    results = run_policy_tests(load_bundle(root))

    assert [(r.file, r.name, r.passed) for r in results] == [
        ("a_test.rego", "test_one", True),
        ("sub/b_test.rego", "test_two", True),
    ]


def test_a_rule_that_is_not_exactly_true_fails(root: Path) -> None:
    (root / "x_test.rego").write_text('package x_test\nimport rego.v1\ntest_value := "yes"\ntest_one := 1\n')

    assert [r.passed for r in run_policy_tests(load_bundle(root))] == [False, False]


def test_no_test_files_means_no_results(root: Path) -> None:
    assert run_policy_tests(load_bundle(root)) == []


def test_the_repository_policy_tests_pass() -> None:
    results = run_policy_tests(load_bundle(Path(__file__).resolve().parents[3] / "policies"))

    assert results
    assert [r for r in results if not r.passed] == []
