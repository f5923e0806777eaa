from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy.bundle import PolicyBundle, RegoFile, load_bundle

MODULE = "package demo.authz\n\nimport rego.v1\n\ndefault allow := false\n"
TEST = "package demo.authz_test\n\nimport rego.v1\n\ntest_x if { true }\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "pol"
    (root / "sub").mkdir(parents=True)
    (root / "authz.rego").write_text(MODULE)
    (root / "authz_test.rego").write_text(TEST)
    (root / "sub" / "extra.rego").write_text("package demo.extra\n")
    return root


def test_loads_modules_tests_and_digest(root: Path) -> None:
    bundle = load_bundle(root)

    assert bundle.root == root
    assert [f.path for f in bundle.files] == ["authz.rego", "authz_test.rego", "sub/extra.rego"]
    assert [f.path for f in bundle.modules] == ["authz.rego", "sub/extra.rego"]
    assert [f.path for f in bundle.tests] == ["authz_test.rego"]
    assert bundle.files[0].source == MODULE
    assert bundle.data == {}
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", bundle.digest)


def test_digest_is_stable(root: Path, tmp_path: Path) -> None:
    first = load_bundle(root).digest
    other = tmp_path / "copy"
    other.mkdir()
    for p in root.rglob("*"):
        if p.is_file():
            target = other / p.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())

    assert load_bundle(root).digest == first
    assert load_bundle(other).digest == first  # the location of the root does not matter


CHANGES = {
    "module content": lambda r: (r / "authz.rego").write_text(MODULE + "# comment\n"),
    "test content": lambda r: (r / "authz_test.rego").write_text(TEST + "\n"),
    "nested file": lambda r: (r / "sub" / "extra.rego").write_text("package demo.extra2\n"),
    "new rego file": lambda r: (r / "more.rego").write_text("package demo.more\n"),
    "renamed file": lambda r: (r / "sub" / "extra.rego").rename(r / "sub" / "renamed.rego"),
    "moved file": lambda r: (r / "sub" / "extra.rego").rename(r / "extra.rego"),
    "removed file": lambda r: (r / "sub" / "extra.rego").unlink(),
    "new data.json": lambda r: (r / "data.json").write_text('{"a": 1}'),
    "other json": lambda r: (r / "notes.json").write_text("{}"),
    "one byte": lambda r: (r / "authz.rego").write_bytes(MODULE.encode().replace(b"false", b"falsE")),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_digest_changes_when_any_policy_file_changes(root: Path, change: str) -> None:
    before = load_bundle(root).digest

    CHANGES[change](root)

    assert load_bundle(root).digest != before


def test_contents_cannot_be_shifted_between_files_unnoticed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.rego").write_text("package p\n# ab")
    (a / "y.rego").write_text("c")
    (b / "x.rego").write_text("package p\n# a")
    (b / "y.rego").write_text("bc")

    assert load_bundle(a).digest != load_bundle(b).digest


def test_other_files_are_ignored(root: Path) -> None:
    before = load_bundle(root)
    (root / "README.md").write_text("notes")
    (root / "authz.rego.bak").write_text("junk")
    (root / "__init__.py").write_text("")

    after = load_bundle(root)

    assert after.digest == before.digest
    assert after.files == before.files


def test_data_json_is_merged(root: Path) -> None:
    (root / "data.json").write_text('{"limits": {"max": 10}, "a": 1}')
    (root / "sub" / "data.json").write_text('{"b": [1, 2]}')

    assert load_bundle(root).data == {"limits": {"max": 10}, "a": 1, "b": [1, 2]}


def test_bad_data_json_names_file_and_line(root: Path) -> None:
    (root / "data.json").write_text('{\n  "a": 1,\n  "b": \n}\n')

    with pytest.raises(PolicyError) as info:
        load_bundle(root)

    assert info.value.code == "policy_invalid"
    assert str(info.value).startswith(f"{root / 'data.json'}: line 4: invalid JSON")


def test_data_json_must_be_an_object(root: Path) -> None:
    (root / "data.json").write_text("[1, 2]")

    with pytest.raises(PolicyError, match=r"data\.json must hold an object"):
        load_bundle(root)


def test_non_utf8_file_is_refused(root: Path) -> None:
    (root / "bad.rego").write_bytes(b"package x\n\xff\n")

    with pytest.raises(PolicyError, match="cannot read policy file") as info:
        load_bundle(root)
    assert info.value.code == "policy_invalid"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy directory does not exist") as info:
        load_bundle(tmp_path / "nope")
    assert info.value.code == "policy_invalid"


@pytest.mark.parametrize(
    "files", [{}, {"only_test.rego": TEST}, {"data.json": "{}"}], ids=["empty", "tests", "data"]
)
def test_a_bundle_needs_a_module(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    with pytest.raises(PolicyError, match="no Rego policy modules found"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    ("source", "package"),
    [
        ("package a.b.c\n", "a.b.c"),
        ("# comment\n\npackage x_test\nimport rego.v1\n", "x_test"),
        ("  package  spaced\n", "spaced"),
    ],
)
def test_rego_file_package(source: str, package: str) -> None:
    assert RegoFile("f.rego", source).package == package


def test_rego_file_without_package() -> None:
    with pytest.raises(PolicyError, match="no 'package' declaration"):
        _ = RegoFile("f.rego", "allow := true\n").package


@pytest.mark.parametrize(
    ("path", "is_test"),
    [("a_test.rego", True), ("dir/a_test.rego", True), ("test_a.rego", False), ("a.rego", False)],
)
def test_is_test(path: str, is_test: bool) -> None:
    assert RegoFile(path, "").is_test is is_test


def test_bundle_is_frozen(root: Path) -> None:
    bundle: PolicyBundle = load_bundle(root)

    with pytest.raises(AttributeError):
        bundle.digest = "x"  # type: ignore[misc]
