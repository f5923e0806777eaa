"""A seccomp filter through libseccomp (ctypes): dangerous syscalls and non-Unix sockets get EPERM.

The filter allows everything by default and refuses, with ``EPERM``:

- the syscalls in ``DENIED_SYSCALLS`` (debugging other processes, namespaces, mounts, kernel
  modules and keys, BPF, perf, io_uring, which can open sockets without passing this filter);
- ``socket()`` for every address family except ``AF_UNIX`` (the gateway channel is an inherited
  Unix socketpair): no TCP/UDP, netlink, packet, vsock or AF_ALG sockets;
- ``clone()`` with any namespace flag. ``clone3`` gets ``ENOSYS`` (its flags sit behind a
  pointer the filter cannot read), so libc falls back to ``clone``.

libseccomp checks the architecture: syscalls of another ABI (i386 via ``int 0x80``, x32) kill
the process. The filter is built from the pure ``FilterPlan`` below and loaded last.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from dataclasses import dataclass

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "iopl", "ioperm",
    "settimeofday", "clock_settime", "clock_adjtime",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "open_by_handle_at", "name_to_handle_at", "personality", "lookup_dcookie", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip

CLONE_NAMESPACE_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

_ACT_ALLOW = 0x7FFF0000
_CMP_NE = 1
_CMP_MASKED_EQ = 7
_RESOLVE_FAIL = -1  # __NR_SCMP_ERROR


def _act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class SeccompError(OSError):
    """libseccomp is missing or refused the filter."""


@dataclass(frozen=True)
class ArgRule:
    """Refuse ``syscall`` with ``errno`` when argument ``arg`` compares true (``op``: ne / masked_eq)."""

    syscall: str
    arg: int
    op: str
    value: int
    mask: int = 0
    err: int = errno.EPERM


@dataclass(frozen=True)
class FilterPlan:
    denied: tuple[str, ...]
    arg_rules: tuple[ArgRule, ...]
    enosys: tuple[str, ...] = ("clone3",)


def worker_filter_plan(*, block_sockets: bool = True) -> FilterPlan:
    """The worker's filter; ``block_sockets`` refuses every socket family but AF_UNIX."""
    rules = [ArgRule("clone", 0, "masked_eq", flag, mask=flag) for flag in CLONE_NAMESPACE_FLAGS]
    if block_sockets:
        rules.append(ArgRule("socket", 0, "ne", socket.AF_UNIX))
    return FilterPlan(DENIED_SYSCALLS, tuple(rules))


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def load_libseccomp() -> tuple[ctypes.CDLL | None, str | None]:
    """libseccomp, or None and why not."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        return None, f"libseccomp.so.2 is not installed ({exc}); install libseccomp2"
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib, None


def _cmp(rule: ArgRule) -> _ArgCmp:
    if rule.op == "ne":
        return _ArgCmp(rule.arg, _CMP_NE, rule.value, 0)
    if rule.op == "masked_eq":
        return _ArgCmp(rule.arg, _CMP_MASKED_EQ, rule.mask, rule.value)
    raise ValueError(f"unknown comparison {rule.op!r}")


def install(plan: FilterPlan) -> list[str]:
    """Load ``plan`` into this process (irreversible); return syscalls this kernel/libseccomp lacks."""
    lib, why = load_libseccomp()
    if lib is None:
        raise SeccompError(errno.ENOSYS, why)
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompError(errno.ENOMEM, "seccomp_init failed")
    unknown: list[str] = []
    try:

        def add(name: str, action: int, cmps: list[_ArgCmp]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == _RESOLVE_FAIL:
                unknown.append(name)
                return
            array = (_ArgCmp * max(len(cmps), 1))(*cmps)
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc < 0:
                raise SeccompError(-rc, f"seccomp_rule_add({name}): error {-rc}")

        for name in plan.denied:
            add(name, _act_errno(errno.EPERM), [])
        for name in plan.enosys:
            add(name, _act_errno(errno.ENOSYS), [])
        for rule in plan.arg_rules:
            add(rule.syscall, _act_errno(rule.err), [_cmp(rule)])
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SeccompError(-rc, f"seccomp_load: error {-rc}")
    finally:
        lib.seccomp_release(ctx)
    return unknown
