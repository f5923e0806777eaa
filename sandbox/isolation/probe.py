"""What this host offers, asked without changing the calling process.

``probe_host`` reads facts (euid, Landlock ABI, libseccomp, cgroup v2, user namespaces);
``support_from`` turns them into a verdict per layer (pure, so tested with made-up facts).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sandbox.isolation import landlock, seccomp
from sandbox.isolation.limits import CGROUP_ROOT, cgroup2_root
from sandbox.isolation.report import LayerReport


@dataclass(frozen=True)
class HostFacts:
    linux: bool
    euid: int
    landlock_abi: int
    landlock_reason: str | None
    libseccomp: bool
    libseccomp_reason: str | None
    userns: bool  # unprivileged user namespaces allowed
    cgroup_reason: str | None  # None: a usable cgroup v2 hierarchy


@dataclass(frozen=True)
class Support:
    layer: str
    supported: bool
    detail: str


def _userns_allowed() -> bool:
    for path, ok in (
        ("/proc/sys/user/max_user_namespaces", lambda v: int(v) > 0),
        ("/proc/sys/kernel/unprivileged_userns_clone", lambda v: v == "1"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", lambda v: v == "0"),
    ):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if not ok(value):
            return False
    return True


def probe_host(cgroup_root: Path = CGROUP_ROOT) -> HostFacts:
    linux = sys.platform == "linux"
    abi, why = landlock.abi_version() if linux else (0, "Landlock is Linux only")
    lib, lib_why = seccomp.load_libseccomp() if linux else (None, "seccomp is Linux only")
    root, cg_why = cgroup2_root(cgroup_root) if linux else (None, "cgroups are Linux only")
    return HostFacts(
        linux=linux,
        euid=os.geteuid(),
        landlock_abi=abi,
        landlock_reason=why,
        libseccomp=lib is not None,
        libseccomp_reason=lib_why,
        userns=linux and _userns_allowed(),
        cgroup_reason=None if root is not None else cg_why,
    )


def support_from(facts: HostFacts) -> list[Support]:
    """Per layer: can this host give it to a worker started by this user?"""
    root = facts.euid == 0
    if root:
        net = Support("network", True, "private network namespace")
    elif facts.userns:
        net = Support("network", True, "private network namespace inside a user namespace")
    elif facts.libseccomp:
        net = Support("network", True, "no namespaces for this user: seccomp refuses non-Unix sockets")
    else:
        net = Support("network", False, "no namespaces for this user and no libseccomp")
    return [
        Support("environment", True, "built from an allowlist"),
        Support("descriptors", facts.linux, "only the channel" if facts.linux else "needs /proc"),
        Support("cgroup", facts.cgroup_reason is None, facts.cgroup_reason or "cgroup v2 memory and pids"),
        net,
        Support("rlimits", True, "address space, open files, processes, core dumps"),
        Support("uid", True, "drops to an unprivileged uid" if root else "not root: nothing to drop"),
        Support("no_new_privs", facts.linux, "prctl(PR_SET_NO_NEW_PRIVS)"),
        Support(
            "filesystem",
            facts.landlock_abi > 0,
            f"Landlock ABI {facts.landlock_abi}"
            if facts.landlock_abi
            else facts.landlock_reason or "no Landlock",
        ),
        Support(
            "seccomp",
            facts.libseccomp,
            "libseccomp filter" if facts.libseccomp else facts.libseccomp_reason or "no libseccomp",
        ),
    ]


def unsupported_layers(optional: tuple[str, ...] = ()) -> list[LayerReport]:
    """The layers this host cannot give a worker, as reports (for strict mode's early refusal)."""
    return [
        LayerReport(s.layer, "unavailable", False, s.detail)
        for s in support_from(probe_host())
        if not s.supported and s.layer not in optional
    ]
