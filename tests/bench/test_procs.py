"""bench/procs.py: pausing a gateway that is not being measured, and stopping a paused one."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.procs import Processes, pause

CHILD = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for_child(pid: int) -> int:
    for _ in range(100):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError("the child did not start its own child")


def test_pause_stops_and_continues_the_process_and_its_children() -> None:
    with Processes() as procs:
        proc = procs.spawn([sys.executable, "-c", CHILD])
        grandchild = wait_for_child(proc.pid)
        pause(proc.pid, True)
        # A signalled process shows as stopped once it next runs: poll, a loaded machine lags.
        assert until(lambda: state(proc.pid) == "T" and state(grandchild) == "T")
        pause(proc.pid, False)
        assert until(lambda: state(proc.pid) != "T" and state(grandchild) != "T")


def test_a_paused_process_is_still_stopped_by_sigterm() -> None:
    with Processes() as procs:
        proc = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(0.2)
        pause(proc.pid, True)
        started = time.monotonic()
        procs.stop(proc, grace_s=5)
        assert proc.returncode == -signal.SIGTERM  # not the SIGKILL after the grace period
        assert time.monotonic() - started < 5
