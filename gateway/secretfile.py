"""Small secret files (peppers, digest keys): created with mode 0600, refused if others can read
them (``gateway.filemode``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.errors import ConfigError
from gateway.filemode import too_open


def create_secret(path: Path, nbytes: int = 32) -> bytes:
    """Create ``path`` holding ``nbytes`` random bytes (hex), never readable by others, even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_bytes(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: already exists; refusing to overwrite a secret") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create secret file ({exc.strerror})") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value.hex() + "\n")
    return value


def read_secret(path: Path) -> bytes:
    """Read a secret written by ``create_secret``; refuse files that group or others may read."""
    text = _read_private(path, "secret file", "ascii")
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: secret file is not hex-encoded") from exc
    if len(value) < 16:
        raise ConfigError(f"{path}: secret is too short (need at least 16 bytes)")
    return value


def read_secret_text(path: Path, what: str) -> str:
    """A one-line secret (a connection string that may hold a password), refused if others may
    read it; the value never appears in an error."""
    text = _read_private(path, what, "utf-8")
    if not text or "\n" in text:
        raise ConfigError(f"{path}: {what} must be one non-empty line")
    return text


def _read_private(path: Path, what: str, encoding: str) -> str:
    """The file's text, stripped; ConfigError if it cannot be read or group or others may."""
    try:
        info = path.stat()
        text = path.read_text(encoding=encoding).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.__class__.__name__})") from exc
    if too_open(info):
        raise ConfigError(f"{path}: {what} is accessible by group or others; fix with: chmod 600 {path}")
    return text
