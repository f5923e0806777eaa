"""How a worker is to be isolated: chosen by the gateway, sent to the worker as ``--sandbox JSON``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sandbox.isolation.report import LAYERS

NOBODY = 65534

# Layers ``apply_isolation`` applies itself, and so may skip (``unsafe_skip_layers``).
SKIPPABLE_LAYERS = ("cgroup", "network", "rlimits", "uid", "no_new_privs", "filesystem", "seccomp")


@dataclass(frozen=True)
class SandboxSettings:
    strict: bool = False  # refuse to serve when a layer is missing (except those in ``optional``)
    optional: tuple[str, ...] = ()  # layers strict mode tolerates missing (e.g. "cgroup")
    uid: int = NOBODY  # a root gateway's workers become this uid/gid
    gid: int = NOBODY
    memory_limit_bytes: int | None = None  # RLIMIT_AS and cgroup memory.max; None: unlimited
    max_open_files: int = 1024
    max_processes: int = 512  # RLIMIT_NPROC (only once the uid was dropped) and cgroup pids.max
    gpus: tuple[int, ...] = ()  # CUDA device indices: their /dev/nvidia* files are allowed
    # Tests only, never read from the gateway's configuration: layers the worker leaves off
    # (reported ``disabled``, so strict mode refuses them). The hostile-model tests' controls use
    # it to show each attack succeeds without the layer that stops it (docs/threat-model.md).
    unsafe_skip_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        skip = [name for name in self.unsafe_skip_layers if name not in SKIPPABLE_LAYERS]
        if skip:
            known = ", ".join(SKIPPABLE_LAYERS)
            raise ValueError(f"cannot skip layer(s) {', '.join(skip)} (skippable: {known})")
        unknown = [name for name in self.optional if name not in LAYERS]
        if unknown:
            raise ValueError(f"unknown isolation layer(s) {', '.join(unknown)} (known: {', '.join(LAYERS)})")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes < 64 * 1024 * 1024:
            raise ValueError("memory_limit_bytes must be at least 64 MiB")
        if self.max_open_files < 16 or self.max_processes < 1:
            raise ValueError("max_open_files must be >= 16 and max_processes >= 1")
        if any(g < 0 for g in self.gpus) or self.uid < 0 or self.gid < 0:
            raise ValueError("gpus, uid and gid must be >= 0")

    def to_json(self) -> str:
        data = asdict(self)
        data["optional"], data["gpus"] = list(self.optional), list(self.gpus)
        data["unsafe_skip_layers"] = list(self.unsafe_skip_layers)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxSettings:
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("sandbox settings must be a JSON object")
        known = set(cls.__dataclass_fields__)
        extra = set(data) - known
        if extra:
            raise ValueError(f"unknown sandbox setting(s): {', '.join(sorted(extra))}")
        data["optional"] = tuple(data.get("optional", ()))
        data["gpus"] = tuple(data.get("gpus", ()))
        data["unsafe_skip_layers"] = tuple(data.get("unsafe_skip_layers", ()))
        return cls(**data)


DEFAULT_SETTINGS = SandboxSettings()
