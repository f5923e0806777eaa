"""The worker fork server: ``python -m sandbox.forkserver --fd N``.

Started by the gateway (``sandbox.spawner``) with a worker's clean environment and a temp dir
of its own, it imports what a worker needs (torch, transformers, the model-loading path, a few
common architectures, ``sandbox.worker``) without initialising CUDA or starting a thread, then
serves spawn requests on the inherited ``SOCK_SEQPACKET`` socket (``sandbox.forkproto``). For
each request it forks; the child becomes a worker as ``python -m sandbox.worker`` would start
(``sandbox.forkchild``) and isolates itself in the same ``sandbox.worker.main``. The server
sends each child's pid (with a pidfd, so the gateway signals and watches it free of pid reuse)
and, once it has reaped the child, its exit status.

It exits when its socket closes: the gateway is gone, or closed it. Its children live on until
their own channels close, as exec'd workers do. It must stay single-threaded (fork copies only
the calling thread: a lock another thread held would stay locked in the child) and never import
the gateway's policy engine (regopy and torch abort together); it refuses to serve if an import
started a thread or the CUDA driver.
"""

from __future__ import annotations

import argparse
import array
import importlib
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Sequence

from gateway.errors import ForkServerError
from sandbox.forkchild import become_worker
from sandbox.forkproto import (
    MAX_FDS,
    MAX_MESSAGE,
    Exited,
    Failed,
    Ready,
    ServerMessage,
    Spawned,
    SpawnRequest,
    encode_reply,
    peek_id,
    received_fds,
)

log = logging.getLogger("llmos.sandbox.forkserver")

# What every worker would import; the model-loading path is most of a cold start (torch alone
# takes seconds). The architectures are optional: one this transformers lacks is skipped.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.generation.utils",
    "transformers.tokenization_utils_tokenizers",
    "safetensors.torch",
    "sandbox.worker",
    "sandbox.model",
    "sandbox.batchdecode",
    "explain.attribution",  # captum: attributions when a policy asks for them
)
PRELOAD_OPTIONAL = (
    "accelerate",
    "transformers.models.llama.modeling_llama",
    "transformers.models.mistral.modeling_mistral",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.models.qwen3.modeling_qwen3",
    "transformers.models.gemma2.modeling_gemma2",
    "transformers.models.phi3.modeling_phi3",
    "transformers.models.gpt2.modeling_gpt2",
)


def preload() -> list[str]:
    """Import the worker's runtime; return the optional modules that are missing."""
    for name in PRELOAD:
        importlib.import_module(name)
    missing = []
    for name in PRELOAD_OPTIONAL:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def fork_hazard() -> str | None:
    """Why forking this process would give broken workers, or None: another thread (its locks),
    or CUDA initialised (a forked child cannot use it)."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        return f"{threads} threads are running after the imports (a library started a thread pool)"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "torch initialised CUDA during the imports"
    with open("/proc/self/maps") as maps:
        if any("libcuda.so" in line for line in maps):
            return "the CUDA driver was loaded during the imports"
    return None


def send(control: socket.socket, message: ServerMessage, fds: Sequence[int] = ()) -> None:
    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    control.sendmsg([encode_reply(message)], ancdata)


def receive(control: socket.socket) -> tuple[bytes, list[int]] | None:
    """One request and its descriptors; None when the gateway closed the socket."""
    data, ancdata, flags, _ = control.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds = received_fds(ancdata)
    if not data and not fds:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close(fds)
        return data[:0], []  # refused as malformed below
    return data, fds


def spawn(control: socket.socket, data: bytes, fds: list[int]) -> None:
    """Fork one worker for the request in ``data``; reply ``spawned`` or ``failed``."""
    try:
        request = SpawnRequest.decode(data)
        if len(fds) != (2 if request.stderr else 1):
            raise ForkServerError(f"spawn request: {len(fds)} descriptor(s) passed, expected 1 or 2")
    except ForkServerError as exc:
        _close(fds)
        send(control, Failed(peek_id(data), str(exc)))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _close(fds)
        send(control, Failed(request.id, f"fork failed: {exc}"))
        return
    if pid == 0:
        become_worker(request, fds[0], fds[1] if request.stderr else None, control)  # never returns
    _close(fds)  # the child's channel must close with the child and the gateway only
    try:
        pidfd = os.pidfd_open(pid)  # before any reaping: it is this child, whatever happens next
    except OSError as exc:
        os.kill(pid, signal.SIGKILL)
        send(control, Failed(request.id, f"pidfd_open failed ({exc}): the fork server needs Linux 5.3+"))
        return
    try:
        send(control, Spawned(request.id, pid), (pidfd,))
    finally:
        os.close(pidfd)
    log.info("forked worker pid %d", pid)


def reap(control: socket.socket) -> None:
    """Report every child that has ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        returncode = os.waitstatus_to_exitcode(status)
        log.info("worker pid %d exited with %d", pid, returncode)
        send(control, Exited(pid, returncode))


def serve(control: socket.socket, wakeup: int) -> None:
    """Spawn and reap until the gateway closes the socket."""
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wakeup, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wakeup:
                _drain(wakeup)
                reap(control)
                continue
            got = receive(control)
            if got is None:
                log.info("the gateway closed the control socket; exiting")
                return
            spawn(control, *got)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.forkserver", description=__doc__)
    parser.add_argument(
        "--fd", type=int, required=True, help="inherited SOCK_SEQPACKET socket to the gateway"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s forkserver[pid={os.getpid()}] %(levelname)s %(message)s",
    )
    control = socket.socket(fileno=args.fd)
    try:
        missing = preload()
        if missing:
            log.info("optional modules not available, not preloaded: %s", ", ".join(missing))
        hazard = fork_hazard()
        if hazard is not None:
            message = f"fork server refuses to fork workers: {hazard}; use workers.spawner: exec"
            log.error("%s", message)
            send(control, Failed(0, message))
            return 2
        wakeup, notify = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(notify, warn_on_full_buffer=False)  # a full pipe still wakes the loop
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wakeup byte is the event
        send(control, Ready(os.getpid()))
        log.info("ready: torch and transformers preloaded")
        serve(control, wakeup)
        return 0
    except (BrokenPipeError, ConnectionResetError):
        log.info("the gateway is gone; exiting")
        return 0
    finally:
        control.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
