"""Attacker code for the hostile-model tests, as plain functions.

``payload_source`` turns one of them into the file a worker runs after isolation
(``WorkerSpec.payload``): the function's source, the ``attempt`` helper, and a call that raises
``Verdict`` with a JSON object mapping each attempt to ``"ok"`` (the attack worked) or
``"blocked: ERRNO"``. The worker sends that text to the gateway in its ``fatal`` frame, so the
test reads the outcome from ``ModelWorker.last_error``. Each function must be self-contained
(imports inside): only its source travels.
"""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Callable
from typing import Any

VERDICT = "payload raised Verdict: "


def attempt(action: Callable[[], object]) -> str:
    """``"ok"`` if ``action`` worked, else how it was refused."""
    import errno

    try:
        result = action()
    except MemoryError:
        return "blocked: MemoryError"
    except OSError as exc:
        return f"blocked: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return "ok" if result is None or result is True else f"blocked: {result}"


def connect_tcp(port: int) -> dict[str, str]:
    import socket

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"exfiltrated")

    return {"connect": attempt(connect)}


def read_files(paths: list[str]) -> dict[str, str]:
    def reader(path: str) -> Callable[[], bool]:
        def read() -> bool:
            with open(path, "rb") as handle:
                return len(handle.read(64)) > 0

        return read

    return {path: attempt(reader(path)) for path in paths}


def write_files(paths: list[str]) -> dict[str, str]:
    import os
    import tempfile

    def writer(path: str) -> Callable[[], None]:
        def write() -> None:
            with open(path, "w") as handle:
                handle.write("written by the model worker")

        return write

    results = {path: attempt(writer(path)) for path in paths}
    own = os.path.join(tempfile.gettempdir(), "scratch")  # the worker's own temp dir: allowed
    results["own temp dir"] = attempt(writer(own))
    return results


def exec_shell() -> dict[str, str]:
    import os
    import subprocess

    def execv() -> bool | str:
        pid = os.fork()
        if pid == 0:
            try:
                os.execv("/bin/sh", ["sh", "-c", "exit 7"])  # noqa: S606  (the attack)
            except OSError as exc:
                os._exit(100 + (exc.errno or 0))
            os._exit(99)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == 7:
            return True
        import errno

        return errno.errorcode.get(code - 100, str(code))

    def run() -> bool:
        out = subprocess.run(["/bin/sh", "-c", "echo pwned"], capture_output=True, timeout=10, check=False)
        return out.stdout == b"pwned\n"

    return {"execv": attempt(execv), "subprocess": attempt(run)}


def fork_bomb(cap: int) -> dict[str, str]:
    """Fork up to ``cap`` children that wait for this process to go: bounded, and self-cleaning
    (each child exits when the pipe's last writer, this process, closes it)."""
    import os

    read_end, write_end = os.pipe()
    forked = 0
    error = ""
    try:
        for _ in range(cap):
            try:
                pid = os.fork()
            except OSError as exc:
                import errno

                error = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                break
            if pid == 0:
                os.close(write_end)
                os.read(read_end, 1)
                os._exit(0)
            forked += 1
    finally:
        os.close(write_end)  # every child reads EOF and exits
        os.close(read_end)
    outcome = "ok" if forked == cap else f"blocked: {error}"
    return {"fork": outcome, "forked": str(forked), "pgid": str(os.getpgid(0))}


def allocate(nbytes: int, touch: bool) -> dict[str, str]:
    """Reserve ``nbytes`` (``mmap``, lazily backed) and, with ``touch``, fill that much (``bytearray``)."""
    import mmap

    def reserve() -> None:
        mmap.mmap(-1, nbytes).close()

    results = {"mmap": attempt(reserve)}
    if touch:

        def fill() -> None:
            buf = bytearray(nbytes)
            del buf

        results["bytearray"] = attempt(fill)
    return results


def foreign_abi_syscall() -> dict[str, str]:
    """``getpid`` through the x32 ABI: seccomp kills the process (SIGSYS); without it, a kernel
    without x32 answers ENOSYS."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(0x40000000 | 39)
    return {"x32 syscall": "ok" if result > 0 else f"blocked: errno {ctypes.get_errno()}"}


def returns_normally() -> dict[str, str]:
    return {}


def payload_source(attack: Callable[..., dict[str, str]], /, **params: Any) -> str:
    """The payload file running ``attack(**params)`` and raising its verdict."""
    parts = [
        "from __future__ import annotations",
        "import json",
        "from typing import Any, Callable",
        "",
        "class Verdict(Exception):",
        "    pass",
        "",
        textwrap.dedent(inspect.getsource(attempt)),
        textwrap.dedent(inspect.getsource(attack)),
    ]
    if attack is returns_normally:
        parts.append(f"{attack.__name__}()")
    else:
        parts.append(f"raise Verdict(json.dumps({attack.__name__}(**json.loads({json.dumps(params)!r}))))")
    return "\n".join(parts) + "\n"


def verdict(last_error: str | None) -> dict[str, str]:
    """The attempts' outcomes from the worker's ``fatal`` message."""
    if last_error is None or not last_error.startswith(VERDICT):
        raise AssertionError(f"the payload did not report a verdict: {last_error!r}")
    result: dict[str, str] = json.loads(last_error[len(VERDICT) :])
    return result
