"""A private network namespace: the worker sees only its own (down) loopback interface.

As root, ``unshare(CLONE_NEWNET)``. Without root, a user namespace first
(``CLONE_NEWUSER | CLONE_NEWNET``), mapping the caller's uid and gid to themselves, where the
host allows unprivileged user namespaces. Must run while the process has one thread.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)  # bytes: no codec lookup (an import) needed
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_private_netns() -> str:
    """Move this process into a new, empty network namespace; return how (raises OSError)."""
    if os.geteuid() == 0:
        _unshare(CLONE_NEWNET)
        return "netns"
    uid, gid = os.geteuid(), os.getegid()
    _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/setgroups", "deny\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    return "userns+netns"
