"""Landlock through raw syscalls (ctypes): ABI probe, ruleset, rules, restrict_self.

x86_64 and aarch64 share the syscall numbers (444, 445, 446). The ruleset attribute grows with
the ABI (fs rights; + net rights at 4; + scopes at 6), so its size is chosen from the ABI.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

from sandbox.isolation.rules import Ruleset

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_SUPPORTED_MACHINES = ("x86_64", "aarch64")


class LandlockError(OSError):
    """Landlock could not be set up (``errno`` says why)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> tuple[int, str | None]:
    """The kernel's Landlock ABI (0 if none) and why it is missing."""
    if platform.system() != "Linux" or platform.machine() not in _SUPPORTED_MACHINES:
        return 0, f"Landlock syscalls are not wired up for {platform.system()} {platform.machine()}"
    abi = _libc().syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    if abi < 0:
        err = ctypes.get_errno()
        if err == errno.EOPNOTSUPP:
            return 0, "Landlock is built into the kernel but disabled (boot with lsm=...,landlock)"
        return 0, f"the kernel has no Landlock ({os.strerror(err)})"
    return int(abi), None


def _attr_size(abi: int) -> int:
    return 24 if abi >= 6 else 16 if abi >= 4 else 8


def restrict_self(ruleset: Ruleset, abi: int) -> list[str]:
    """Apply ``ruleset`` to this process (needs no_new_privs); return the paths it could not open.

    Raises LandlockError if the kernel refuses the ruleset, a rule or the restriction.
    """
    libc = _libc()
    attr = _RulesetAttr(ruleset.handled_fs, ruleset.handled_net, ruleset.scoped)
    fd = libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(_attr_size(abi)), ctypes.c_uint32(0)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    missing = []
    try:
        for rule in ruleset.rules:
            try:
                path_fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except (FileNotFoundError, PermissionError):  # absent, or this uid cannot reach it anyway
                missing.append(rule.path)
                continue
            try:
                if stat.S_ISDIR(os.fstat(path_fd).st_mode) != rule.is_dir:
                    missing.append(rule.path)  # a file where a directory was expected, or back
                    continue
                beneath = _PathBeneathAttr(rule.access, path_fd)
                if (
                    libc.syscall(
                        _SYS_ADD_RULE, fd, _RULE_PATH_BENEATH, ctypes.byref(beneath), ctypes.c_uint32(0)
                    )
                    != 0
                ):
                    err = ctypes.get_errno()
                    raise LandlockError(err, f"landlock_add_rule {rule.describe()}: {os.strerror(err)}")
            finally:
                os.close(path_fd)
        if libc.syscall(_SYS_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(fd)
    return missing
