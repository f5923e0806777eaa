"""The audit log as a file the offline tools read: the configured SQLite file, or, with
``audit.backend: postgres``, a copy of the shared log pulled into a temporary file
(``pull.py``) that is deleted afterwards. Used by ``llmos audit``, ``explain verify`` and
``policy replay``."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.audit.pull import Pulled, pull_shared
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.secretfile import read_secret_text


def pull_configured(config: Config, out: Path) -> Pulled:
    """Copy the configured shared log into ``out``; says what it copied on stderr."""
    if config.audit.backend != "postgres" or config.audit.postgres_dsn_file is None:
        raise ConfigError("audit pull: the configuration's audit.backend is not postgres")
    dsn = read_secret_text(config.audit.postgres_dsn_file, "audit.postgres_dsn_file")
    pulled = pull_shared(dsn, out)
    waiting = f"; {pulled.pending} appended entries are not integrated yet" if pulled.pending else ""
    print(
        f"pulled {pulled.entries} entries and {pulled.checkpoints} checkpoints of the shared audit log"
        f" into {out}{waiting}",
        file=sys.stderr,
    )
    return pulled


@contextmanager
def audit_file(config: Config) -> Iterator[Path]:
    """The configured audit log as a SQLite file (ConfigError if there is none)."""
    if config.audit.backend == "sqlite":
        if not config.audit_db.exists():
            raise ConfigError(f"{config.audit_db}: no audit database here")
        yield config.audit_db
        return
    with tempfile.TemporaryDirectory(prefix="llmos-audit-") as tmp:
        path = Path(tmp) / "audit.db"
        pull_configured(config, path)
        yield path
