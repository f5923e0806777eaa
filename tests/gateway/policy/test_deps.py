"""The input-dependency scan behind the decision cache: it may over-approximate, never miss."""

from __future__ import annotations

import pytest

from gateway.policy.deps import InputDeps, project, scan

HEADER = "package t\nimport rego.v1\n"


def paths(body: str) -> set[tuple[str, ...]]:
    deps = scan([HEADER + body])
    assert deps.uncacheable is None
    return set(deps.paths)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('allow if input.user == "ok"', {("user",)}),
        ('allow if input["request"]["model"] == "m"', {("request", "model")}),
        ('allow if input.request["max_tokens"] > 1', {("request", "max_tokens")}),
        ("allow if input.pii.findings[t] > 0", {("pii", "findings")}),
        ('allow if input.roles[0] == "a"', {("roles",)}),
        ("allow if some r in input.principal.roles", {("principal", "roles")}),
        # A bare input, in any position, is the whole document.
        ('allow if object.get(input, ["a", "b"], 0) > 0', {()}),
        ("allow if { x := input; x.a == 1 }", {()}),
        ("allow if walk(input, [p, v])", {()}),
        # Overlapping references keep the shorter path.
        ("allow if { input.a.b == 1; input.a == {} }", {("a",)}),
        # Spaces inside a reference stop it where they start.
        ("allow if input .a == 1", {()}),
        ('allow if input.a ["b"] == 1', {("a",)}),
        ("allow if input.a.\nb == 1", {("a",)}),
        # Raw strings and numbers as keys are not read as static parts.
        ("allow if input.a[`b`] == 1", {("a",)}),
        # Mentions in comments, strings and other documents are not references.
        ('# input.secret\nallow if data.input.x == "input.y"', set()),
        ("allow if input.user == 'x' # input.other", {("user",)}),
        # An import of part of input is a reference to that part.
        ('import input.request as req\nallow if req.model == "m"', {("request",)}),
        ("allow if input.a.b with input.c as 1", {("a", "b"), ("c",)}),
    ],
)
def test_references_found(body: str, expected: set[tuple[str, ...]]) -> None:
    assert paths(body) == expected


def test_references_in_all_modules_are_joined() -> None:
    deps = scan([HEADER + "a if input.x == 1", HEADER + "b if input.y.z == 1"])
    assert set(deps.paths) == {("x",), ("y", "z")}
    assert deps.cacheable


@pytest.mark.parametrize(
    "call",
    [
        "time.now_ns()",
        'rand.intn("k", 10)',
        'uuid.rfc4122("k")',
        "opa.runtime()",
        'http.send({"method": "get", "url": "http://x"})',
        'net.lookup_ip_addr("x")',
        'io.jwt.decode_verify("t", {})',
        'crypto.x509.parse_and_verify_certificates("c")',
    ],
)
def test_nondeterministic_builtins_make_the_policy_uncacheable(call: str) -> None:
    deps = scan([HEADER + f"allow if {{ x := {call}; input.a == x }}"])
    assert not deps.cacheable
    assert deps.uncacheable is not None and call.split("(")[0] in deps.uncacheable


def test_a_field_named_like_a_builtin_is_not_a_call() -> None:
    assert scan([HEADER + "allow if input.time.now_ns == 1"]).cacheable


def test_template_strings_make_the_policy_uncacheable() -> None:
    deps = scan([HEADER + 'msg := $"hello {input.name}"'])
    assert not deps.cacheable


def test_whole_input_is_not_cacheable() -> None:
    assert not InputDeps(frozenset({()})).cacheable
    assert InputDeps(frozenset({("a",)})).cacheable


DOC = {"a": {"b": 1, "c": [1, 2]}, "t": "2026-11-29T10:00:00.123+00:00", "n": None}


def test_projection_keeps_only_the_paths_read() -> None:
    key = project(DOC, frozenset({("a", "b")}))
    assert key == project({**DOC, "t": "other", "a": {"b": 1, "c": []}}, frozenset({("a", "b")}))
    assert key != project({**DOC, "a": {"b": 2}}, frozenset({("a", "b")}))


def test_projection_tells_absent_from_null_and_types_apart() -> None:
    at = frozenset({("n",), ("a", "b")})
    keys = {
        project(DOC, at),
        project({k: v for k, v in DOC.items() if k != "n"}, at),
        project({**DOC, "a": {"b": True}}, at),
        project({**DOC, "a": {"b": 1.0}}, at),
        project({**DOC, "a": {"b": "1"}}, at),
    }
    assert len(keys) == 5


def test_projection_through_a_non_object_is_absent() -> None:
    at = frozenset({("a", "b")})
    assert project({"a": [1]}, at) == project({"a": "x"}, at) == project({}, at)
