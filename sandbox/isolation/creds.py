"""Dropping root: an unprivileged uid/gid, no supplementary groups, and (optionally) one capability.

Trap on these machines: the interpreter lives under root's home (mode 0700), and a state
directory is 0700 too, so a worker that became ``nobody`` can no longer import a module or read
its model. ``keep_read_search`` keeps exactly ``CAP_DAC_READ_SEARCH`` (read any file, search any
directory) in the effective set: only ever used together with Landlock, which still confines
every read to the allowed paths. Without Landlock the drop is plain, and the model and runtime
must be readable by the worker's uid.
"""

from __future__ import annotations

import ctypes
import os

_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_SYS_CAPSET = 126  # x86_64
_CAP_VERSION_3 = 0x20080522
CAP_DAC_READ_SEARCH = 2
_CAP_LAST = 63


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def set_caps(caps: tuple[int, ...]) -> None:
    """Make ``caps`` the effective and permitted set (nothing inheritable); raises OSError."""
    data = (_CapData * 2)()
    for cap in caps:
        data[cap // 32].effective |= 1 << (cap % 32)
        data[cap // 32].permitted |= 1 << (cap % 32)
    header = _CapHeader(_CAP_VERSION_3, 0)
    if _libc().syscall(_SYS_CAPSET, ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _drop_bounding_set(keep: tuple[int, ...]) -> None:
    libc = _libc()
    for cap in range(_CAP_LAST + 1):
        if cap not in keep:
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap: fine


def drop_privileges(uid: int, gid: int, writable: tuple[str, ...], *, keep_read_search: bool) -> str:
    """Become ``uid``/``gid`` with no groups; ``writable`` paths are handed to the new uid first.

    Returns a description; raises OSError when a step fails (the caller reports it).
    """
    for path in writable:
        os.chown(path, uid, gid)
    keep = (CAP_DAC_READ_SEARCH,) if keep_read_search else ()
    _drop_bounding_set(keep)
    libc = _libc()
    if keep and libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_KEEPCAPS: {os.strerror(err)}")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    set_caps(keep)
    if keep:
        libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    if os.getresuid() != (uid, uid, uid) or os.getgroups():
        raise OSError(f"credentials did not change as asked: uid {os.getresuid()}, groups {os.getgroups()}")
    suffix = "; kept CAP_DAC_READ_SEARCH, reads confined by Landlock" if keep else ""
    return f"uid {uid}, gid {gid}, no supplementary groups{suffix}"
