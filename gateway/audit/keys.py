"""Ed25519 audit signing keys on disk.

- private key: PKCS#8 PEM, unencrypted, mode 0600 (created with that mode, never readable by
  group or other, not even briefly); loading refuses a file with any group/other permission.
- public key: SubjectPublicKeyInfo PEM, mode 0644; give it to auditors for ``llmos audit verify``.

Errors name the file and say how to fix it; they never include key material.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import AuditError
from gateway.filemode import too_open

PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (which must not exist) with ``mode`` from the start and write ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError as exc:
        raise AuditError(f"{path} already exists; refusing to overwrite a key file") from exc
    except OSError as exc:
        raise AuditError(f"cannot create key file {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may have narrowed it; set it exactly
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise AuditError(f"cannot write key file {path}: {exc.strerror}") from exc


def generate_signing_key(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Create a new Ed25519 key pair at the two paths (neither may exist); return the public key."""
    private_path, public_path = Path(private_path), Path(public_path)
    if public_path.exists():
        raise AuditError(f"{public_path} already exists; refusing to overwrite a key file")
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    private_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public_pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    _write_new_file(private_path, private_pem, PRIVATE_KEY_MODE)
    try:
        _write_new_file(public_path, public_pem, PUBLIC_KEY_MODE)
    except AuditError:
        with contextlib.suppress(OSError):
            private_path.unlink()
        raise
    return public_key


def load_private_key(path: Path, *, what: str = "audit signing key") -> Ed25519PrivateKey:
    """Load an Ed25519 private key (the audit signing key unless ``what`` says otherwise);
    refuse a file that group or other may access. Errors name ``what`` and the file."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise AuditError(f"{what} {path} does not exist") from exc
    except OSError as exc:
        raise AuditError(f"cannot open {what} {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AuditError(f"{what} {path} is not a regular file")
        if too_open(info):
            raise AuditError(
                f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}, which lets "
                f"group or other read it; fix with: chmod 600 {path}"
            )
        try:
            data = handle.read()
        except OSError as exc:
            raise AuditError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuditError(f"{what} {path} is not an unencrypted PKCS#8 PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditError(f"{what} {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path, *, what: str = "audit public key") -> Ed25519PublicKey:
    """Load an Ed25519 public key (SubjectPublicKeyInfo PEM); errors name ``what`` and the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise AuditError(f"{what} {path} does not exist") from exc
    except OSError as exc:
        raise AuditError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise AuditError(f"{what} {path} is not a SubjectPublicKeyInfo PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditError(f"{what} {path} is not an Ed25519 key")
    return key


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key: a short, stable name for the key."""
    raw = public_key.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
