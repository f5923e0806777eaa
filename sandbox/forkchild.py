"""A fork server's child turning into a worker (``sandbox.forkserver``; runs after ``fork``).

What an exec'd worker gets from ``spawn_worker`` and a fresh interpreter, the child sets up by
hand before ``sandbox.worker.main``: its own session; stdin and stdout on /dev/null, stderr on
the passed log, the channel at ``CHANNEL_FD`` and no other descriptor (least of all the fork
server's control socket); the request's cwd and whole environment (``os.environ`` is replaced;
``tempfile`` forgets the server's temp dir); default signal handling; root logging unset (the
worker configures its own). ``main`` then isolates the child exactly as it isolates an exec'd
worker; the child has one thread, as netns, Landlock and seccomp need. Torch's thread count,
which an exec'd worker takes from ``OMP_NUM_THREADS`` when it loads torch, is set right after
isolation (setting it starts a thread pool). The child never returns into the server's loop:
it leaves with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Mapping
from typing import NoReturn

from sandbox.forkproto import CHANNEL_FD, SpawnRequest
from sandbox.isolation.env import close_stray_fds


def become_worker(
    request: SpawnRequest, channel: int, stderr: int | None, control: socket.socket
) -> NoReturn:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        control.detach()  # its descriptor is closed below; the object must not close a reused one
        os.setsid()
        arrange_fds(channel, stderr)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        tempfile.tempdir = None
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        from sandbox import worker

        sys.argv = [worker.__file__, *request.argv]
        code = worker.main(list(request.argv), after_isolation=lambda: set_torch_threads(request.env))
    except SystemExit as exc:  # argparse refusing the arguments, as in an exec'd worker
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # the child must never unwind into the fork server's loop
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def arrange_fds(channel: int, stderr: int | None) -> None:
    """0 and 1 on /dev/null, 2 on ``stderr`` (or /dev/null), the channel at ``CHANNEL_FD``, and
    every other descriptor closed."""
    null = os.open(os.devnull, os.O_RDWR)
    # First lift each source above the targets, so no dup2 below overwrites one still needed.
    lifted = [
        fcntl.fcntl(fd, fcntl.F_DUPFD, CHANNEL_FD + 1) for fd in (channel, stderr, null) if fd is not None
    ]
    src_null = lifted[-1]
    os.dup2(src_null, 0)
    os.dup2(src_null, 1)
    os.dup2(lifted[1] if stderr is not None else src_null, 2)
    os.dup2(lifted[0], CHANNEL_FD)
    close_stray_fds({0, 1, 2, CHANNEL_FD})


def set_torch_threads(env: Mapping[str, str]) -> None:
    """What ``OMP_NUM_THREADS`` does for an exec'd worker (torch read the server's environment)."""
    value = env.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and value.isdigit() and int(value) > 0:
        torch.set_num_threads(int(value))
