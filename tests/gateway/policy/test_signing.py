"""Detached Ed25519 signatures over policy bundles, and load_policy refusing unsigned ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.keys import generate_signing_key
from gateway.config import Config
from gateway.errors import ConfigError, PolicyError
from gateway.policy.bundle import load_bundle
from gateway.policy.reload import load_policy
from gateway.policy.signing import (
    SIGNATURE_FILE,
    load_signing_key,
    load_verify_key,
    sign_bundle,
    verify_bundle,
)

MODULE = """package t
import rego.v1

default allow := false
allow if input.user == "ok"

decision := {"allow": allow}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    root.mkdir()
    (root / "t.rego").write_text(MODULE)
    (root / "data.json").write_text('{"t": {"limit": 1}}')
    return root


def make_keys(where: Path, name: str = "policy") -> tuple[Path, Path]:
    where.mkdir(parents=True, exist_ok=True)
    private, public = where / f"{name}.pem", where / f"{name}.pub.pem"
    generate_signing_key(private, public)
    return private, public


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_keys(tmp_path / "keys")


def public(keys: tuple[Path, Path]) -> Ed25519PublicKey:
    return load_verify_key(keys[1])


def invalid(policy_dir: Path, key: Ed25519PublicKey) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        verify_bundle(load_bundle(policy_dir), key)
    assert info.value.code == "policy_signature_invalid"
    return info.value


def test_sign_then_verify(policy_dir: Path, keys: tuple[Path, Path]) -> None:
    digest = sign_bundle(policy_dir, keys[0])

    bundle = load_bundle(policy_dir)
    assert digest == bundle.digest  # .signature is not part of the digest it signs
    verify_bundle(bundle, public(keys))
    assert (policy_dir / SIGNATURE_FILE).read_text().endswith("\n")
    assert not (policy_dir / (SIGNATURE_FILE + ".tmp")).exists()


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("t.rego", MODULE.replace('"ok"', '"anyone"')),
        ("data.json", '{"t": {"limit": 2}}'),
        ("extra.rego", "package extra\nx := 1\n"),
    ],
)
def test_any_change_after_signing_is_invalid(
    policy_dir: Path, keys: tuple[Path, Path], path: str, text: str
) -> None:
    sign_bundle(policy_dir, keys[0])
    (policy_dir / path).write_text(text)

    error = invalid(policy_dir, public(keys))

    assert "does not match policy sha256:" in str(error)


def test_missing_signature_is_invalid(policy_dir: Path, keys: tuple[Path, Path]) -> None:
    error = invalid(policy_dir, public(keys))

    assert "not signed" in str(error)
    assert str(policy_dir / SIGNATURE_FILE) in str(error)


def test_wrong_key_is_invalid(policy_dir: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    sign_bundle(policy_dir, keys[0])
    other = make_keys(tmp_path / "other")

    invalid(policy_dir, public(other))


@pytest.mark.parametrize("garbage", ["", "not base64 at all!", "AAAA\n"])
def test_garbled_signature_is_invalid(policy_dir: Path, keys: tuple[Path, Path], garbage: str) -> None:
    (policy_dir / SIGNATURE_FILE).write_text(garbage)

    invalid(policy_dir, public(keys))


def test_signing_key_must_be_private(policy_dir: Path, keys: tuple[Path, Path]) -> None:
    keys[0].chmod(0o644)

    with pytest.raises(PolicyError, match="chmod 600") as info:
        sign_bundle(policy_dir, keys[0])
    assert info.value.code == "policy_key_invalid"


def test_key_files_are_checked(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_verify_key(tmp_path / "nope.pem")
    with pytest.raises(PolicyError, match="not a SubjectPublicKeyInfo PEM"):
        load_verify_key(keys[0])  # a private key where the public one belongs
    (tmp_path / "junk.pem").write_text("junk")
    (tmp_path / "junk.pem").chmod(0o600)
    with pytest.raises(PolicyError, match="not an unencrypted PKCS#8 PEM"):
        load_signing_key(tmp_path / "junk.pem")


def config_for(policy_dir: Path, tmp_path: Path, **policy: object) -> Config:
    settings = {"dir": str(policy_dir), "query": "data.t.decision", "output_query": None, **policy}
    return Config.model_validate(
        {"state_dir": str(tmp_path / "state"), "policy": settings}, context={"base_dir": tmp_path}
    )


def test_load_policy_requires_a_valid_signature(
    policy_dir: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    config = config_for(policy_dir, tmp_path, public_key="keys/policy.pub.pem")  # relative: resolved
    assert config.policy.public_key == keys[1]

    with pytest.raises(PolicyError) as info:
        load_policy(config)
    assert info.value.code == "policy_signature_invalid"

    digest = sign_bundle(policy_dir, keys[0])
    assert load_policy(config).digest == digest

    (policy_dir / "t.rego").write_text(MODULE + "\n# changed\n")
    with pytest.raises(PolicyError) as info:
        load_policy(config)
    assert info.value.code == "policy_signature_invalid"


def test_unsigned_bundles_load_without_a_public_key(policy_dir: Path, tmp_path: Path) -> None:
    assert load_policy(config_for(policy_dir, tmp_path)).digest == load_bundle(policy_dir).digest


def test_opa_engine_refuses_a_public_key(policy_dir: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    config = config_for(policy_dir, tmp_path, engine="opa", public_key=str(keys[1]))

    with pytest.raises(ConfigError, match=r"policy\.public_key"):
        load_policy(config)
