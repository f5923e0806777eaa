"""A policy bundle: the Rego modules, their tests and data of one directory, with a content digest.

The digest (SHA-256 over every file's relative path and content, in path order) identifies the
exact policy set that made a decision; it is recorded in every audit entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import PolicyError

_PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)


@dataclass(frozen=True)
class RegoFile:
    path: str  # relative to the bundle root
    source: str

    @property
    def package(self) -> str:
        match = _PACKAGE_RE.search(self.source)
        if match is None:
            raise PolicyError(f"{self.path}: no 'package' declaration", code="policy_invalid")
        return match.group(1)

    @property
    def is_test(self) -> bool:
        return self.path.endswith("_test.rego")


@dataclass(frozen=True)
class PolicyBundle:
    root: Path
    files: tuple[RegoFile, ...]
    data: dict[str, Any]
    digest: str

    @property
    def modules(self) -> tuple[RegoFile, ...]:
        return tuple(f for f in self.files if not f.is_test)

    @property
    def tests(self) -> tuple[RegoFile, ...]:
        return tuple(f for f in self.files if f.is_test)


def load_bundle(root: Path) -> PolicyBundle:
    """Read every ``*.rego`` file and an optional ``data.json`` below ``root``."""
    if not root.is_dir():
        raise PolicyError(f"{root}: policy directory does not exist", code="policy_invalid")
    digest = hashlib.sha256()
    files: list[RegoFile] = []
    data: dict[str, Any] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".rego", ".json")):
        rel = path.relative_to(root).as_posix()
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: cannot read policy file ({exc})", code="policy_invalid") from exc
        digest.update(hashlib.sha256(rel.encode()).digest())
        digest.update(hashlib.sha256(raw).digest())
        if path.suffix == ".rego":
            files.append(RegoFile(rel, text))
        elif path.name == "data.json":
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PolicyError(
                    f"{path}: line {exc.lineno}: invalid JSON: {exc.msg}", code="policy_invalid"
                ) from exc
            if not isinstance(loaded, dict):
                raise PolicyError(f"{path}: data.json must hold an object", code="policy_invalid")
            data.update(loaded)
    if not any(not f.is_test for f in files):
        raise PolicyError(f"{root}: no Rego policy modules found", code="policy_invalid")
    return PolicyBundle(root=root, files=tuple(files), data=data, digest="sha256:" + digest.hexdigest())
