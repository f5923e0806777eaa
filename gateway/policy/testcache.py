"""Which policy bundles already passed their tests, so a restart does not run them again.

Running a policy library's Rego tests takes seconds (13 s for the shipped library on 2 cores);
their result depends only on the bundle's bytes and the engine, so a bundle digest that passed
with this engine version is recorded in ``<state_dir>/policy-tests.json`` and not tested again
on the next start or reload. A failure is never recorded: a failing bundle is tested (and
refused) every time. Writing the record is best effort: without it the tests simply run again.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

log = logging.getLogger("llmos.gateway")

KEEP = 16  # most recent digests remembered


def engine_version() -> str:
    try:
        return f"regopy {version('regopy')}"
    except PackageNotFoundError:
        return "regopy unknown"


class PassedTests:
    def __init__(self, path: Path, engine: str | None = None) -> None:
        self.path = path
        self.engine = engine or engine_version()

    def _read(self) -> list[str]:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        passed = value.get("passed") if isinstance(value, dict) else None
        return [p for p in passed if isinstance(p, str)] if isinstance(passed, list) else []

    def _key(self, digest: str) -> str:
        return f"{digest} {self.engine}"

    def known(self, digest: str) -> bool:
        return self._key(digest) in self._read()

    def record(self, digest: str) -> None:
        passed = [p for p in self._read() if p != self._key(digest)] + [self._key(digest)]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"passed": passed[-KEEP:]}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not record that the policy tests passed (%s): they run again next start", exc)
