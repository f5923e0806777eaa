"""The API key llmos presents to an upstream: from an environment variable or a secret file.

A file is re-read when its modification time or size changes (checked at most once a second),
so a rotated Kubernetes secret or Vault-rendered file takes effect without a restart. A file
that others may read is refused, like every other secret file of llmos. The key never appears
in an error message or a log line: problems name the variable or the file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.errors import ConfigError

RECHECK_S = 1.0
MAX_KEY_CHARS = 4096


def _checked(value: str, where: str) -> str:
    key = value.strip()
    if not key:
        raise ConfigError(f"{where}: the upstream API key is empty")
    if len(key) > MAX_KEY_CHARS or any(c in key for c in "\r\n\0") or not key.isprintable():
        raise ConfigError(f"{where}: the upstream API key is not a single printable line")
    return key


class KeySource:
    """``current()``: the key to send (None: send no Authorization header)."""

    def __init__(
        self,
        *,
        env: str | None = None,
        file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file
        self._clock = clock
        self._key: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked_at = -RECHECK_S
        if env is not None:
            value = (os.environ if environ is None else environ).get(env)
            if value is None:
                raise ConfigError(f"the upstream API key variable {env} is not set")
            self._key = _checked(value, f"${env}")
        elif file is not None:
            self._reload()  # at startup: a missing or unreadable file fails `llmos serve` now

    def current(self) -> str | None:
        if self._file is not None and self._clock() - self._checked_at >= RECHECK_S:
            # On failure keep the last good key; the upstream refusing it shows (upstream_auth_failed).
            with contextlib.suppress(ConfigError):
                self._reload()
        return self._key

    def _reload(self) -> None:
        assert self._file is not None
        self._checked_at = self._clock()
        path = self._file
        unreadable = f"{path}: cannot read the upstream API key file"
        try:
            info = path.stat()
        except OSError as exc:
            raise ConfigError(f"{unreadable} ({exc.__class__.__name__})") from exc
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        if info.st_mode & stat.S_IROTH:
            raise ConfigError(
                f"{path}: the upstream API key file is readable by others; fix with: chmod o-r {path}"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{unreadable} ({exc.__class__.__name__})") from exc
        self._key = _checked(text, str(path))
        self._stamp = stamp
