"""The isolation seam around a model worker (first layer; namespaces, Landlock and seccomp come later).

The parent builds a scrubbed environment (``build_worker_env``) and spawns the worker with
``close_fds`` and only the channel passed. The child calls ``apply_isolation`` before loading
any model: it checks the environment and descriptors it was given, sets
``PR_SET_NO_NEW_PRIVS`` and ``RLIMIT_CORE = 0``, and returns an ``IsolationReport`` that is sent
to the gateway in the ``ready`` frame. Anything that could not be applied is reported, never
silently skipped.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ALLOWED_ENV_KEYS = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONPATH",
        "PYTHONNOUSERSITE",
        "PYTHONDONTWRITEBYTECODE",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "HF_HUB_DISABLE_TELEMETRY",
        "TOKENIZERS_PARALLELISM",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    }
)

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39


@dataclass(frozen=True)
class IsolationReport:
    """What the worker applied to itself; ``notes`` explains anything missing."""

    env_scrubbed: bool
    fds_closed: bool
    no_new_privs: bool
    core_dumps_disabled: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IsolationReport:
        notes = data.get("notes", [])
        return cls(
            env_scrubbed=data.get("env_scrubbed") is True,
            fds_closed=data.get("fds_closed") is True,
            no_new_privs=data.get("no_new_privs") is True,
            core_dumps_disabled=data.get("core_dumps_disabled") is True,
            notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
        )


def build_worker_env(
    work_dir: Path, *, threads: int | None = None, pythonpath: str | None = None
) -> dict[str, str]:
    """The complete environment of a worker: nothing is inherited from the gateway."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work_dir),
        "TMPDIR": str(work_dir),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HOME": str(work_dir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _close_stray_fds(keep: set[int]) -> list[int]:
    """Close every descriptor not in ``keep``; return those that had been open."""
    stray = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory handle used for the listing, now closed
        stray.append(fd)
        os.close(fd)
    return stray


def _set_no_new_privs() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)


def apply_isolation(channel_fd: int) -> IsolationReport:
    """Run in the worker before the model loads."""
    notes: list[str] = []
    unexpected = sorted(set(os.environ) - ALLOWED_ENV_KEYS)
    env_scrubbed = not unexpected
    if unexpected:
        notes.append(f"environment has {len(unexpected)} unexpected variable(s)")  # names may be secret

    fds_closed = False
    if sys.platform == "linux":
        stray = _close_stray_fds({0, 1, 2, channel_fd})
        fds_closed = True
        if stray:
            notes.append(f"closed {len(stray)} inherited descriptor(s): {stray}")
    else:
        notes.append("descriptor check needs /proc (Linux only)")

    no_new_privs = False
    if sys.platform == "linux":
        try:
            no_new_privs = _set_no_new_privs()
        except (OSError, AttributeError) as exc:
            notes.append(f"prctl unavailable: {exc}")
        if not no_new_privs:
            notes.append("PR_SET_NO_NEW_PRIVS could not be set")
    else:
        notes.append("PR_SET_NO_NEW_PRIVS is Linux only")

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        core_dumps_disabled = True
    except (OSError, ValueError) as exc:
        core_dumps_disabled = False
        notes.append(f"RLIMIT_CORE could not be set: {exc}")

    return IsolationReport(
        env_scrubbed=env_scrubbed,
        fds_closed=fds_closed,
        no_new_privs=no_new_privs,
        core_dumps_disabled=core_dumps_disabled,
        notes=tuple(notes),
    )
