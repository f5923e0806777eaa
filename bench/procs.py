"""Subprocesses of the proxy benchmark: started pinned to CPUs, watched for memory, always cleaned up.

``Processes`` starts each child in its own session (so a Ctrl-C in the terminal reaches only the
benchmark, which then stops them in order) with ``PR_SET_PDEATHSIG`` (so a benchmark killed with
SIGKILL still takes them down) and its CPU affinity set before ``exec``. ``close()`` sends
SIGTERM to each child's process group and to every descendant found under /proc, waits, then
SIGKILLs what is left. Peak memory is read from /proc: the sum of ``VmHWM`` (the kernel's
per-process resident high-water mark) over a process and all its descendants, each process's
largest value kept while it is sampled (so a child that exits still counts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


def _child_setup(cpus: frozenset[int] | None) -> None:
    """Runs in the forked child before exec (no threads exist in the benchmark process)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if cpus:
        os.sched_setaffinity(0, cpus)


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        ppid = int(stat.rpartition(")")[2].split()[1])  # the name in (...) may hold spaces
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = children_map()
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def status_kb(pid: int, field: str) -> int | None:
    """A memory field of /proc/PID/status (``VmHWM``, ``VmRSS``) in kB; None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in argv[:4] if a)[:200]


class MemoryWatch:
    """The largest VmHWM seen for each process of one tree."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.hwm_kb: dict[int, int] = {}
        self.names: dict[int, str] = {}

    def sample(self) -> None:
        for pid in (self.root, *descendants(self.root)):
            kb = status_kb(pid, "VmHWM")
            if kb is not None and kb > self.hwm_kb.get(pid, 0):
                self.hwm_kb[pid] = kb
                self.names.setdefault(pid, _command(pid))

    def breakdown(self) -> list[dict[str, object]]:
        """Each process seen: pid, command, peak MB (a forked child's peak counts the pages it
        still shares with its parent, so the sum may count them twice)."""
        return [{"pid": p, "command": self.names[p], "peak_mb": kb / 1024} for p, kb in self.hwm_kb.items()]

    @property
    def peak_mb(self) -> float:
        return sum(self.hwm_kb.values()) / 1024

    def rss_now_mb(self) -> float:
        """Resident memory of the tree now (VmRSS summed), for comparison with the peak."""
        pids = (self.root, *descendants(self.root))
        return sum(status_kb(pid, "VmRSS") or 0 for pid in pids) / 1024

    @property
    def processes(self) -> int:
        return len(self.hwm_kb)


class Processes:
    """Every child the benchmark starts; ``close()`` (or leaving the ``with``) stops them all."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cpus: frozenset[int] | None = None,
        log: Path | None = None,
        pipes: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv``; with ``pipes`` its stdin/stdout are pipes, else stdout goes to ``log``."""
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            out = log.open("ab")
            self.logs.append(out)
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out,
            start_new_session=True,
            preexec_fn=lambda: _child_setup(cpus),  # safe: the benchmark runs no threads
        )
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
        """SIGTERM to the process, its group and its descendants; SIGKILL whatever outlives grace_s."""
        desc = descendants(proc.pid)
        for sig in (signal.SIGTERM, signal.SIGCONT):  # a paused one handles SIGTERM once continued
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            for pid in desc:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (proc.poll() is None or any(map(_alive, desc))):
            time.sleep(0.05)
        for pid in [proc.pid, *desc]:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def close(self) -> None:
        """Stop every child, newest first; a second Ctrl-C or SIGTERM waits until this is done."""
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.children:
                self.stop(self.children.pop())
            while self.logs:
                self.logs.pop().close()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def pause(pid: int, paused: bool) -> None:
    """SIGSTOP (``paused``) or SIGCONT to ``pid``'s process group and its descendants: an idle
    gateway's timers and housekeeping then cannot run on the core of the one being measured."""
    sig = signal.SIGSTOP if paused else signal.SIGCONT
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for child in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _tree_ticks(root: int) -> int:
    """CPU ticks used by ``root`` and its descendants, with the children they reaped."""
    total = 0
    for pid in (root, *descendants(root)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total


def _system_ticks() -> tuple[int, int]:
    """(user + nice + system, steal) ticks of all CPUs, from /proc/stat."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return cpu[0] + cpu[1] + cpu[2], cpu[7] if len(cpu) > 7 else 0


class CpuAudit:
    """How much CPU others took while the benchmark ran: processes that are not this one or its
    descendants, and time the hypervisor stole. Either makes the numbers noisy."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = time.monotonic()
        self.busy0, self.steal0 = _system_ticks()
        self.ours0 = _tree_ticks(os.getpid())

    def cores(self) -> dict[str, float]:
        """Average CPU cores used since construction: ``others`` and ``steal``."""
        seconds = (time.monotonic() - self.t0) * self.hz
        busy, steal = _system_ticks()
        others = (busy - self.busy0) - (_tree_ticks(os.getpid()) - self.ours0)
        return {"others": max(0.0, others / seconds), "steal": (steal - self.steal0) / seconds}
