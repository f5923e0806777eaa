"""Run in a fresh interpreter by the layer tests: apply some layers, try some things, print JSON.

    python child.py '{"become": 65534 | null, "layers": [...], "checks": [[name, arg], ...], ...}'

Everything is imported first, so the child may change uid without needing to import again.
"""

from __future__ import annotations

import ctypes
import encodings.idna  # noqa: F401  (getaddrinfo needs it; no imports once the uid changed)
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox.isolation import apply_isolation, creds, landlock, netns, seccomp
from sandbox.isolation.apply import runtime_read_dirs
from sandbox.isolation.limits import RlimitPlan, apply_rlimits
from sandbox.isolation.rules import FsPlan, landlock_rules
from sandbox.isolation.settings import SandboxSettings

libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn: Any) -> str:
    try:
        fn()
    except OSError as exc:
        return f"refused:{exc.errno}"
    except MemoryError:
        return "refused:memory"
    return "ok"


def syscall_check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def tcp(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def write(path: str) -> None:
    with open(path, "w") as f:
        f.write("x")


def forks(count: int) -> None:
    """Fork up to ``count`` children that wait on a pipe; all are reaped before returning."""
    read_end, write_end = os.pipe()
    children = []
    try:
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                os.close(write_end)
                os.read(read_end, 1)  # returns when the parent closes its end
                os._exit(0)
            children.append(pid)
    finally:
        os.close(write_end)
        for pid in children:
            os.waitpid(pid, 0)
        os.close(read_end)


def run(path: str) -> None:
    subprocess.run([path, "-c", "true"], check=True, timeout=10)


CHECKS = {
    "tcp": lambda arg: attempt(lambda: tcp(int(arg))),
    "socket_inet": lambda arg: attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "socket_unix": lambda arg: attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()),
    "read": lambda arg: attempt(lambda: Path(arg).read_bytes()),
    "list": lambda arg: attempt(lambda: os.listdir(arg)),
    "write": lambda arg: attempt(lambda: write(arg)),
    "exec": lambda arg: attempt(lambda: run(arg)),
    "ptrace_traceme": lambda arg: attempt(lambda: syscall_check(libc.ptrace(0, 0, None, None))),
    "unshare_uts": lambda arg: attempt(lambda: syscall_check(libc.unshare(0x04000000))),
    "alloc": lambda arg: attempt(lambda: bytearray(int(arg))),
    "forks": lambda arg: attempt(lambda: forks(int(arg))),
    "uid": lambda arg: list(os.getresuid()),
    "groups": lambda arg: os.getgroups(),
}


def apply_layer(name: str, spec: dict[str, Any]) -> Any:
    if name == "netns":
        return netns.enter_private_netns()
    if name == "seccomp":
        return seccomp.install(seccomp.worker_filter_plan())
    if name == "rlimits":
        return apply_rlimits(RlimitPlan(spec.get("memory"), 256, None))
    if name == "uid":
        return creds.drop_privileges(65534, 65534, (spec["work_dir"],), keep_read_search=True)
    if name == "landlock":
        abi, _ = landlock.abi_version()
        syscall_check(libc.prctl(38, 1, 0, 0, 0))
        plan = FsPlan(
            work_dir=spec["work_dir"], runtime_dirs=runtime_read_dirs(), model_dir=spec.get("model_dir")
        )
        return landlock.restrict_self(landlock_rules(plan, abi), abi)
    if name == "deny_unshare":  # like a container whose seccomp profile forbids namespaces
        return seccomp.install(seccomp.FilterPlan(denied=("unshare",), arg_rules=(), enosys=()))
    if name == "all":
        settings = SandboxSettings(**spec.get("settings", {}))
        return apply_isolation(-1, settings).to_dict()
    raise ValueError(name)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("become") is not None:  # simulate a gateway that never was root
        os.chown(spec["work_dir"], spec["become"], spec["become"])
        os.setgroups([])
        os.setresgid(spec["become"], spec["become"], spec["become"])
        os.setresuid(spec["become"], spec["become"], spec["become"])
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: as a process that never changed uid would be
    applied = {name: apply_layer(name, spec) for name in spec["layers"]}
    results = [CHECKS[name](arg) for name, arg in spec["checks"]]
    print(json.dumps({"applied": applied, "results": results}))


if __name__ == "__main__":
    main()
