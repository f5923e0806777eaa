"""Resource limits: rlimits (address space, descriptors, processes, no core dumps) and a cgroup v2
leaf with ``memory.max`` and ``pids.max``.

The cgroup leaf is ``<gateway's cgroup>/llmos-<worker temp dir name>`` under a cgroup2 mount at
``/sys/fs/cgroup``; the worker moves itself in before it drops root, and the gateway removes the
empty leaf after reaping it (``remove_worker_cgroup``). Needs the memory and pids controllers
delegated to the gateway's cgroup (systemd: ``Delegate=yes``).
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class RlimitPlan:
    address_space: int | None  # RLIMIT_AS in bytes; None: unlimited
    open_files: int
    processes: int | None  # RLIMIT_NPROC; None: left alone (it counts every process of the uid)


def apply_rlimits(plan: RlimitPlan) -> list[str]:
    """Set the limits (never raising a hard limit); return a description of each."""
    done = []
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    done.append("core=0")
    for name, kind, value in (
        ("as", resource.RLIMIT_AS, plan.address_space),
        ("nofile", resource.RLIMIT_NOFILE, plan.open_files),
        ("nproc", resource.RLIMIT_NPROC, plan.processes),
    ):
        if value is None:
            continue
        _soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))
        done.append(f"{name}={value}")
    return done


def processes_of_uid(uid: int, proc: Path = Path("/proc")) -> int:
    """How many processes (threads count too for RLIMIT_NPROC) run with real uid ``uid``."""
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            threads = fields.get("Threads", "1").strip()
            count += int(threads) if threads.isdigit() else 1
    return count


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """The cgroup v2 path from the text of ``/proc/self/cgroup`` (the ``0::`` line), or None."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def cgroup2_root(root: Path = CGROUP_ROOT) -> tuple[Path | None, str | None]:
    """``root`` if a usable cgroup v2 hierarchy is mounted there, else None and why."""
    controllers = root / "cgroup.controllers"
    if not controllers.exists():
        return None, f"{root} is not a cgroup v2 mount (cgroup v1 or hybrid host)"
    present = set(controllers.read_text().split())
    missing = {"memory", "pids"} - present
    if missing:
        return None, f"cgroup v2 controllers {', '.join(sorted(missing))} are not available at {root}"
    if not os.access(root, os.W_OK):
        return None, f"{root} is not writable by this user (delegate a cgroup to the gateway)"
    return root, None


def worker_cgroup_dir(root: Path, gateway_cgroup: str, leaf: str) -> Path:
    return root / gateway_cgroup.lstrip("/") / f"llmos-{leaf}"


def join_cgroup(leaf_dir: Path, memory_max: int | None, pids_max: int | None) -> str:
    """Create ``leaf_dir``, set its limits and move this process into it; raises OSError."""
    parent = leaf_dir.parent
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in ("memory", "pids") if c not in enabled]
    if wanted:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    leaf_dir.mkdir(exist_ok=True)
    (leaf_dir / "memory.max").write_text("max" if memory_max is None else str(memory_max))
    (leaf_dir / "pids.max").write_text("max" if pids_max is None else str(pids_max))
    (leaf_dir / "cgroup.procs").write_text(str(os.getpid()))
    mem = "max" if memory_max is None else str(memory_max)
    return f"{leaf_dir} memory.max={mem} pids.max={pids_max or 'max'}"


def remove_worker_cgroup(leaf: str, root: Path = CGROUP_ROOT) -> None:
    """Remove a reaped worker's (empty) cgroup leaf, if one was made (best effort)."""
    try:
        gateway_cgroup = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return
    if gateway_cgroup is None:
        return
    with contextlib.suppress(OSError):
        worker_cgroup_dir(root, gateway_cgroup, leaf).rmdir()
