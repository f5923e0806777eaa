"""Which paths a worker may touch, and with which Landlock rights (pure: paths in, rules out).

``landlock_rules`` turns a ``FsPlan`` (the model directory, the runtime's directories, the
worker's private temp dir, the assigned GPUs) into ``Rule`` values for one Landlock ABI. Nothing
here touches the filesystem; ``sandbox.isolation.landlock`` applies the rules.

The plan: read access (files and directory listings, no execute) to the model directory, the
Python runtime and the system libraries it maps; read/write access to the private temp dir only;
a few device files; with GPUs, the NVIDIA device files of the assigned GPUs (with ioctl) and
``/dev/shm``. Nothing may be executed: the interpreter is already running, and mapping a shared
library needs only ``READ_FILE`` (``EXECUTE`` is checked by ``execve``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

# Filesystem access rights (linux/landlock.h), and the ABI that introduced each.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

# Network rights (ABI 4) and scopes (ABI 6).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_ABI1_FS = (1 << 13) - 1
MAX_KNOWN_ABI = 7

RIGHT_NAMES = {
    EXECUTE: "execute",
    WRITE_FILE: "write_file",
    READ_FILE: "read_file",
    READ_DIR: "read_dir",
    REMOVE_DIR: "remove_dir",
    REMOVE_FILE: "remove_file",
    MAKE_CHAR: "make_char",
    MAKE_DIR: "make_dir",
    MAKE_REG: "make_reg",
    MAKE_SOCK: "make_sock",
    MAKE_FIFO: "make_fifo",
    MAKE_BLOCK: "make_block",
    MAKE_SYM: "make_sym",
    REFER: "refer",
    TRUNCATE: "truncate",
    IOCTL_DEV: "ioctl_dev",
}

# The only rights a rule on a single file may carry (others give EINVAL).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

READ = READ_FILE | READ_DIR
READ_WRITE = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | REFER | TRUNCATE
DEVICE_RW = READ_FILE | WRITE_FILE | IOCTL_DEV

SYSTEM_READ_DIRS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo", "/proc", "/sys")
SYSTEM_READ_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero")
NVIDIA_SHARED = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


def fs_rights_for_abi(abi: int) -> int:
    """Every filesystem right the kernel of ``abi`` knows (what a ruleset must handle)."""
    if abi < 1:
        return 0
    rights = _ABI1_FS
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def net_rights_for_abi(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scopes_for_abi(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def right_names(rights: int) -> list[str]:
    return [name for bit, name in RIGHT_NAMES.items() if rights & bit]


@dataclass(frozen=True)
class Rule:
    """Allow ``access`` beneath ``path`` (a directory) or on ``path`` itself (a file)."""

    path: str
    access: int
    is_dir: bool

    def __post_init__(self) -> None:
        if not self.is_dir and self.access & ~FILE_RIGHTS:
            raise ValueError(f"a rule on the file {self.path} may carry only file rights")

    def describe(self) -> str:
        return f"{self.path}{'/' if self.is_dir else ''}: {','.join(right_names(self.access))}"


@dataclass(frozen=True)
class FsPlan:
    """What a worker needs from the filesystem; ``runtime_dirs`` come from ``sys.prefix`` and co."""

    work_dir: str
    runtime_dirs: tuple[str, ...]
    model_dir: str | None = None
    extra_read: tuple[str, ...] = ()  # e.g. the resolved targets of symlinks in the model dir
    gpus: tuple[int, ...] = ()
    system_dirs: tuple[str, ...] = SYSTEM_READ_DIRS
    system_files: tuple[str, ...] = SYSTEM_READ_FILES


@dataclass(frozen=True)
class Ruleset:
    handled_fs: int
    handled_net: int
    scoped: int
    rules: tuple[Rule, ...] = field(default=())

    def describe(self) -> list[str]:
        return [r.describe() for r in self.rules]


def gpu_device_files(gpus: Iterable[int]) -> tuple[str, ...]:
    return (*NVIDIA_SHARED, *(f"/dev/nvidia{i}" for i in sorted(set(gpus))))


def _norm(path: str) -> str:
    return str(PurePath(path))


def landlock_rules(plan: FsPlan, abi: int) -> Ruleset:
    """The ruleset for ``plan`` under ``abi``: rights the ABI lacks are masked out.

    Directories overlapping each other simply add up (Landlock unions the rights of a path's
    ancestors); duplicates are merged. Paths are kept as given (make them absolute and resolved
    first); missing ones are the applier's business.
    """
    handled = fs_rights_for_abi(abi)
    dirs: dict[str, int] = {}
    files: dict[str, int] = {}

    def add(table: dict[str, int], path: str, access: int) -> None:
        key = _norm(path)
        table[key] = table.get(key, 0) | (access & handled)

    for d in (*plan.system_dirs, *plan.runtime_dirs, *plan.extra_read):
        add(dirs, d, READ)
    if plan.model_dir is not None:
        add(dirs, plan.model_dir, READ)
    add(dirs, plan.work_dir, READ_WRITE)
    for f in plan.system_files:
        add(files, f, READ_FILE)
    add(files, "/dev/null", READ_FILE | WRITE_FILE)
    if plan.gpus:
        for dev in gpu_device_files(plan.gpus):
            add(files, dev, DEVICE_RW)
        add(dirs, "/dev/shm", READ_WRITE)  # noqa: S108  (CUDA/NCCL shared memory, GPU workers only)
    rules = [Rule(p, a, True) for p, a in sorted(dirs.items()) if a]
    rules += [Rule(p, a & FILE_RIGHTS, False) for p, a in sorted(files.items()) if a & FILE_RIGHTS]
    return Ruleset(handled, net_rights_for_abi(abi), scopes_for_abi(abi), tuple(rules))
