from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from gateway.audit.keys import generate_signing_key, key_fingerprint, load_private_key, load_public_key
from gateway.errors import AuditError

from .conftest import KeyPair


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_key_modes(keypair: KeyPair) -> None:
    assert mode_of(keypair.private_path) == 0o600
    assert mode_of(keypair.public_path) == 0o644
    assert keypair.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keypair.public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_private_key_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_signing_key(tmp_path / "k", tmp_path / "k.pub")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "k") == 0o600
    assert mode_of(tmp_path / "k.pub") == 0o644


def test_keys_load_and_match(keypair: KeyPair) -> None:
    loaded = load_public_key(keypair.public_path)
    assert key_fingerprint(loaded) == key_fingerprint(keypair.private_key.public_key())
    signature = keypair.private_key.sign(b"message")
    loaded.verify(signature, b"message")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_private_key_with_group_or_other_access_refused(keypair: KeyPair, mode: int) -> None:
    keypair.private_path.chmod(mode)
    try:  # group read is allowed for the process's own group only (gateway/filemode.py)
        os.chown(keypair.private_path, -1, os.getegid() + 4242)
    except PermissionError:
        pytest.skip("cannot give the file another group here")
    with pytest.raises(AuditError, match="chmod 600") as info:
        load_private_key(keypair.private_path)
    assert str(keypair.private_path) in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_private_key_0400_accepted(keypair: KeyPair) -> None:
    keypair.private_path.chmod(0o400)
    load_private_key(keypair.private_path)


def test_refuses_to_overwrite(keypair: KeyPair) -> None:
    before = keypair.private_path.read_bytes()
    with pytest.raises(AuditError, match="already exists"):
        generate_signing_key(keypair.private_path, keypair.private_path.parent / "other.pub")
    assert keypair.private_path.read_bytes() == before
    with pytest.raises(AuditError, match="already exists"):
        generate_signing_key(keypair.private_path.parent / "other.key", keypair.public_path)
    assert not (keypair.private_path.parent / "other.key").exists()


def test_missing_files_named(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match=r"missing\.key"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(AuditError, match=r"missing\.pub"):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(AuditError, match="cannot create"):
        generate_signing_key(tmp_path / "no-dir" / "k", tmp_path / "no-dir" / "k.pub")


def test_garbage_and_wrong_algorithm_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(AuditError, match=r"garbage\.key.*PEM"):
        load_private_key(garbage)
    with pytest.raises(AuditError, match=r"garbage\.key.*PEM"):
        load_public_key(garbage)

    ec_key = generate_private_key(SECP256R1())
    ec_path = tmp_path / "ec.key"
    ec_path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ec_path.chmod(0o600)
    with pytest.raises(AuditError, match="not an Ed25519 key"):
        load_private_key(ec_path)
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(AuditError, match="not an Ed25519 key"):
        load_public_key(ec_pub)
