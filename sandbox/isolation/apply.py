"""``apply_isolation``: the worker isolates itself, layer by layer, before any model code runs.

Order matters: what needs privilege first (cgroup, network namespace), then imports the worker
still needs (``warm``), rlimits, the uid drop, ``PR_SET_NO_NEW_PRIVS``, Landlock, and seccomp
last (it refuses ``unshare`` and ``setns``). Every layer is reported, applied or not, with the
reason; nothing is skipped silently. Strictness is the caller's decision (``IsolationReport.missing``).
Layers in ``settings.unsafe_skip_layers`` (tests only) are left off and reported ``disabled``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sandbox.isolation import creds, landlock, netns, seccomp
from sandbox.isolation.env import close_stray_fds, unexpected_env
from sandbox.isolation.limits import (
    CGROUP_ROOT,
    RlimitPlan,
    apply_rlimits,
    join_cgroup,
    own_cgroup,
    processes_of_uid,
    worker_cgroup_dir,
)
from sandbox.isolation.probe import probe_host
from sandbox.isolation.report import LAYERS, IsolationReport, LayerReport
from sandbox.isolation.rules import FsPlan, landlock_rules
from sandbox.isolation.settings import DEFAULT_SETTINGS, SandboxSettings

_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39


def _set_no_new_privs() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return bool(libc.prctl(_PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)


def runtime_read_dirs() -> tuple[str, ...]:
    """Directories the running interpreter reads from: its prefixes, site-packages, and the
    top-level package of every loaded module found elsewhere (never a whole project checkout,
    which may hold the state directory)."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs = {os.path.realpath(p) for p in prefixes}
    for entry in sys.path:
        if entry and ("site-packages" in entry or "dist-packages" in entry) and os.path.isdir(entry):
            dirs.add(os.path.realpath(entry))
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        real = os.path.realpath(file)
        if any(real.startswith(d + os.sep) for d in dirs):
            continue
        package = getattr(module, "__package__", None) or ""
        if not package or not os.path.exists(real):
            continue  # a single-file module outside the runtime is loaded already: no rule needed
        top = os.path.dirname(real)
        for _ in range(package.count(".")):
            top = os.path.dirname(top)  # from the module's directory up to its top-level package
        dirs.add(top)
    return tuple(sorted(dirs))


def model_read_paths(model_dir: Path) -> tuple[str, ...]:
    """Where the model's symlinks (a Hugging Face cache snapshot) point."""
    extra = set()
    for entry in model_dir.iterdir():
        if entry.is_symlink():
            extra.add(os.path.dirname(os.path.realpath(entry)))
    return tuple(sorted(extra))


def _network() -> tuple[str | None, str]:
    try:
        return netns.enter_private_netns(), ""
    except OSError as exc:
        return None, f"no network namespace ({exc.strerror or exc})"


def apply_isolation(
    channel_fd: int,
    settings: SandboxSettings = DEFAULT_SETTINGS,
    *,
    model_dir: Path | None = None,
    warm: Callable[[], None] | None = None,
    cgroup_root: Path = CGROUP_ROOT,
) -> IsolationReport:
    """Isolate this process (the worker) and report every layer."""
    layers: dict[str, LayerReport] = {}
    notes: list[str] = []

    def put(name: str, status: str, supported: bool, detail: str = "") -> None:
        layers[name] = LayerReport(name, status, supported, detail)  # type: ignore[arg-type]

    def skipped(name: str) -> bool:
        """Report a layer the settings skip; True when the caller must leave it off."""
        if name not in settings.unsafe_skip_layers:
            return False
        put(name, "disabled", True, "left off: sandbox unsafe_skip_layers (tests only)")
        return True

    unexpected = unexpected_env(os.environ)
    put(
        "environment",
        "failed" if unexpected else "applied",
        True,
        f"{len(unexpected)} unexpected variable(s)" if unexpected else "built from an allowlist",
    )
    if sys.platform != "linux":
        for name in LAYERS[1:]:
            put(name, "unavailable", False, f"not implemented on {sys.platform}")
        return IsolationReport(tuple(layers[n] for n in LAYERS), ())
    stray = close_stray_fds({0, 1, 2, channel_fd})
    put(
        "descriptors",
        "applied",
        True,
        f"closed {len(stray)} inherited: {stray}" if stray else "only the channel",
    )

    facts = probe_host(cgroup_root)
    root = facts.euid == 0
    work_dir = Path(os.environ.get("TMPDIR") or os.getcwd()).resolve()

    if skipped("cgroup"):
        pass
    elif facts.cgroup_reason is not None:
        put("cgroup", "unavailable", False, facts.cgroup_reason)
    else:
        try:
            gateway_cg = own_cgroup(Path("/proc/self/cgroup").read_text()) or "/"
            leaf = worker_cgroup_dir(cgroup_root, gateway_cg, work_dir.name)
            put(
                "cgroup",
                "applied",
                True,
                join_cgroup(leaf, settings.memory_limit_bytes, settings.max_processes),
            )
        except OSError as exc:
            put("cgroup", "failed", True, f"could not set up a cgroup: {exc}")

    skip_network = "network" in settings.unsafe_skip_layers
    net_mode, net_why = (None, "") if skip_network else _network()

    will_drop = root and settings.uid != 0 and "uid" not in settings.unsafe_skip_layers
    if warm is not None and will_drop and facts.landlock_abi == 0:
        warm()  # a plain drop (no CAP_DAC_READ_SEARCH without Landlock) may lose the interpreter's files
    # RLIMIT_NPROC counts every process of the uid. After the drop the worker's uid is its own;
    # without root it shares the gateway's, so the limit is what the uid runs now plus the
    # worker's allowance (a fork bomb stops there instead of at the machine's limit).
    shared = 0 if will_drop or root else processes_of_uid(os.getuid())
    rl = RlimitPlan(
        address_space=None if settings.gpus else settings.memory_limit_bytes,  # CUDA reserves huge VA
        open_files=settings.max_open_files,
        processes=None if root and not will_drop else shared + settings.max_processes,
    )
    if not skipped("rlimits"):
        _rlimits(put, rl, will_drop, settings)

    if skipped("uid"):
        pass
    elif not root:
        put("uid", "not_needed", True, f"not root: runs as uid {os.geteuid()}")
    elif not will_drop:
        put("uid", "disabled", True, "sandbox.uid is 0: the worker stays root")
    else:
        try:
            put(
                "uid",
                "applied",
                True,
                creds.drop_privileges(
                    settings.uid, settings.gid, (str(work_dir),), keep_read_search=facts.landlock_abi > 0
                ),
            )
        except OSError as exc:
            put("uid", "failed", True, f"could not drop root: {exc}")

    nnp = False
    if not skipped("no_new_privs"):
        try:
            nnp = _set_no_new_privs()
        except (OSError, AttributeError) as exc:
            notes.append(f"prctl unavailable: {exc}")
        put(
            "no_new_privs",
            "applied" if nnp else "failed",
            True,
            "no setuid gains, no privileged exec" if nnp else "PR_SET_NO_NEW_PRIVS could not be set",
        )

    if skipped("filesystem"):
        pass
    elif facts.landlock_abi == 0:
        put("filesystem", "unavailable", False, facts.landlock_reason or "no Landlock")
    elif not nnp:
        put("filesystem", "failed", True, "Landlock needs no_new_privs")
    else:
        plan = FsPlan(
            work_dir=str(work_dir),
            runtime_dirs=runtime_read_dirs(),
            model_dir=None if model_dir is None else os.path.realpath(model_dir),
            extra_read=() if model_dir is None else model_read_paths(model_dir),
            gpus=settings.gpus,
        )
        ruleset = landlock_rules(plan, facts.landlock_abi)
        if skip_network:
            ruleset = replace(ruleset, handled_net=0)  # leave TCP to the (skipped) network layer
        try:
            missing = landlock.restrict_self(ruleset, facts.landlock_abi)
            detail = f"Landlock ABI {facts.landlock_abi}: read {len(plan.runtime_dirs)} runtime dirs"
            detail += ", the model" if model_dir is not None else ""
            detail += f"; write {work_dir} only; no execute"
            detail += "; TCP bind/connect refused" if ruleset.handled_net else ""
            detail += "; signals and abstract sockets scoped" if facts.landlock_abi >= 6 else ""
            if missing:
                notes.append(
                    f"Landlock: {len(missing)} allowed path(s) absent or unreachable: {', '.join(missing)}"
                )
            put("filesystem", "applied", True, detail)
        except OSError as exc:
            put("filesystem", "failed", True, str(exc))

    if skipped("seccomp"):
        pass
    elif not facts.libseccomp:
        put("seccomp", "unavailable", False, facts.libseccomp_reason or "no libseccomp")
    else:
        try:
            unknown = seccomp.install(seccomp.worker_filter_plan(block_sockets=not skip_network))
            detail = "EPERM for ptrace, mount, namespaces, bpf, keys, modules, io_uring, ..."
            detail += "" if skip_network else "; only AF_UNIX sockets"
            if unknown:
                notes.append(f"seccomp: syscalls unknown here, not filtered: {', '.join(unknown)}")
            put("seccomp", "applied", True, detail)
        except OSError as exc:
            put("seccomp", "failed", True, str(exc))

    sockets_refused = layers["seccomp"].applied
    if skipped("network"):
        pass
    elif net_mode is not None:
        extra = "; seccomp also refuses non-Unix sockets" if sockets_refused else ""
        put("network", "applied", True, f"private network namespace ({net_mode}), loopback only{extra}")
    elif sockets_refused:
        put("network", "applied", True, f"{net_why}: seccomp refuses every socket but AF_UNIX instead")
    else:
        put(
            "network",
            "unavailable" if not facts.libseccomp else "failed",
            False,
            f"{net_why}; no seccomp either",
        )
    return IsolationReport(tuple(layers[n] for n in LAYERS), tuple(notes))


def _rlimits(
    put: Callable[[str, str, bool, str], None], rl: RlimitPlan, will_drop: bool, settings: SandboxSettings
) -> None:
    try:
        done = apply_rlimits(rl)
        if not will_drop and rl.processes is not None:
            done.append(
                f"nproc counts the {rl.processes - settings.max_processes} processes this uid already runs"
            )
        elif not will_drop:
            done.append("nproc not set (root is exempt)")
        if settings.gpus and settings.memory_limit_bytes is not None:
            done.append("as not set with GPUs (CUDA maps huge address ranges); memory via cgroup only")
        put("rlimits", "applied", True, ", ".join(done))
    except (OSError, ValueError) as exc:
        put("rlimits", "failed", True, f"setrlimit failed: {exc}")
