"""Spawning and reaping one worker subprocess (the OS edge of the supervisor).

The worker gets a fresh private temp dir as HOME and TMPDIR, a scrubbed environment, stdin and
stdout on /dev/null, stderr appended to the operator's log file (or /dev/null), and no inherited
descriptor except its end of a ``socketpair``. It runs in its own session, so a terminal's
Ctrl-C reaches only the gateway, which then stops its workers in order. The worker isolates
itself (``sandbox.isolation``) with the settings passed as ``--sandbox JSON``.

``WorkerSpec.spawner`` says how the process starts: ``exec`` runs ``python -m sandbox.worker``
in a fresh interpreter; ``fork_server`` forks it from the shared fork server
(``sandbox.spawner``), which has imported torch and transformers already, and sets up the same
session, descriptors, environment and cwd (``sandbox.forkchild``) before the same ``main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox.backend import ModelKind
from sandbox.forkproto import CHANNEL_FD
from sandbox.isolation import SandboxSettings, build_worker_env
from sandbox.isolation.limits import remove_worker_cgroup
from sandbox.protocol import Frame, encode_frame
from sandbox.spawner import SpawnerKind, WorkerHandle, fork_server


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    model_dir: Path | None = None  # required for kind "transformers"; none for "echo"
    kind: ModelKind = "transformers"
    canary_file: Path | None = None  # values that must never reach the model (sandbox.canaries)
    log_path: Path | None = None
    restart_backoff_initial_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    start_timeout_s: float = 120.0
    python: str = field(default_factory=lambda: sys.executable)
    # How the worker process starts: "exec", a fresh interpreter, or "fork_server", forked from
    # a server that imported torch and transformers already (ready far sooner; docs/workers.md).
    spawner: SpawnerKind = "exec"
    max_queue: int = 64
    threads: int | None = None  # OMP/MKL threads of the worker; None leaves torch's default
    healthy_after_s: float = 30.0  # ready this long before dying => the backoff starts over
    stop_timeout_s: float = 5.0
    # A worker holding requests that sends nothing for this long is hung: killed and restarted,
    # its oldest request answered 504, the others 503 (docs/workers.md, "Crash containment").
    request_timeout_s: float = 120.0
    # This many failed starts or short-lived workers in a row mark the model unhealthy: refused
    # at once with 503 until a worker is ready again (restarts go on in the background).
    unhealthy_after_failures: int = 3
    memory_limit_bytes: int | None = None  # RLIMIT_AS and cgroup memory.max; None: unlimited
    gpus: tuple[int, ...] = ()  # CUDA devices: CUDA_VISIBLE_DEVICES and their /dev/nvidia* files
    # One worker over several GPUs (layer sharding): bytes per *local* GPU index for
    # from_pretrained(device_map="auto", max_memory=...); placement sets it (sandbox/placement).
    max_memory: Mapping[int | str, int] | None = None
    # Attributions waiting in the worker (sandbox/explaining.py); beyond: "skipped: overload".
    explain_queue: int = 64
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)  # host-wide isolation settings
    # Release keys whose signed manifest a transformers model directory must match, checked by the
    # gateway before each start (sandbox.manifest); no keys: not checked (model_trust.unsafe_allow_unsigned).
    trusted_keys: tuple[Ed25519PublicKey, ...] = ()
    # Continuous batching in the worker (sandbox/batching.py): at most this many requests decode
    # together (1: one at a time); an idle worker waits this long for others to start with.
    max_batch: int = 16
    batch_window_ms: float = 5.0
    # Load pickle-format weights (.bin, .pt, ...) too: they can run code in the worker when loaded.
    unsafe_allow_pickle_weights: bool = False
    # Tests only, never from the configuration: a Python file the worker runs after isolation and
    # before loading the model, where malicious model code would run (sandbox/worker.py).
    payload: Path | None = None

    def __post_init__(self) -> None:
        positive = ("restart_backoff_initial_s", "start_timeout_s", "stop_timeout_s", "request_timeout_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"WorkerSpec.{name} must be > 0")
        if self.restart_backoff_max_s < self.restart_backoff_initial_s:
            raise ValueError("WorkerSpec.restart_backoff_max_s must be >= restart_backoff_initial_s")
        if self.max_batch < 1 or not 0 <= self.batch_window_ms <= 1000:
            raise ValueError("WorkerSpec.max_batch must be >= 1 and batch_window_ms in [0, 1000]")
        if self.unhealthy_after_failures < 1:
            raise ValueError("WorkerSpec.unhealthy_after_failures must be >= 1")
        if self.explain_queue < 1:
            raise ValueError("WorkerSpec.explain_queue must be >= 1")
        if self.max_queue < 0:
            raise ValueError("WorkerSpec.max_queue must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("WorkerSpec.threads must be >= 1")
        if not self.name or "\x00" in self.name:
            raise ValueError("WorkerSpec.name must be a non-empty string")
        if (self.kind == "transformers") != (self.model_dir is not None):
            raise ValueError("WorkerSpec.model_dir is required for kind transformers and unused for echo")
        self.isolation_settings()  # checks memory_limit_bytes and gpus

    def isolation_settings(self) -> SandboxSettings:
        """What the worker is asked to apply: the host-wide settings plus this model's limits."""
        return replace(self.sandbox, memory_limit_bytes=self.memory_limit_bytes, gpus=tuple(self.gpus))

    def worker_args(self, fd: int) -> list[str]:
        """The ``sandbox.worker`` arguments (paths absolute: the worker runs in its own temp dir)."""
        args = ["--fd", str(fd), "--name", self.name, "--kind", self.kind]
        if self.model_dir is not None:
            args += ["--model-dir", str(self.model_dir.resolve())]
        if self.canary_file is not None:
            args += ["--canaries", str(self.canary_file.resolve())]
        if self.unsafe_allow_pickle_weights:
            args.append("--unsafe-allow-pickle-weights")
        if self.payload is not None:
            args += ["--payload", str(self.payload.resolve())]
        args += ["--max-batch", str(self.max_batch), "--batch-window-ms", f"{self.batch_window_ms:g}"]
        if self.explain_queue != 64:
            args += ["--explain-queue", str(self.explain_queue)]
        if self.max_memory:
            args += ["--max-memory", json.dumps({str(k): v for k, v in self.max_memory.items()})]
        return [*args, "--sandbox", self.isolation_settings().to_json()]


@dataclass
class WorkerProcess:
    """One spawned worker process and its channel."""

    proc: WorkerHandle  # an asyncio.subprocess.Process, or a ForkedProcess (spawner fork_server)
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    work_dir: Path
    alive: bool = True
    last_frame_at: float = 0.0  # event-loop time of the last frame from it (the hang watchdog)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_nowait(self, frame: Frame) -> None:
        """Queue a frame on the channel (no await, so callers may use it in ``finally``)."""
        if self.alive and not self.writer.is_closing():
            self.writer.write(encode_frame(frame))


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


async def spawn_worker(spec: WorkerSpec) -> WorkerProcess:
    work_dir = Path(tempfile.mkdtemp(prefix="llmos-worker-"))
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stderr: IO[bytes] | int = subprocess.DEVNULL
    try:
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            stderr = spec.log_path.open("ab")
        env = build_worker_env(work_dir, threads=spec.threads, pythonpath=_project_root(), gpus=spec.gpus)
        proc: WorkerHandle
        if spec.spawner == "fork_server":
            log_path = None if spec.log_path is None else spec.log_path.parent / "forkserver.log"
            proc = await fork_server(spec.python, log_path).spawn(
                spec.worker_args(CHANNEL_FD),
                env=env,
                cwd=work_dir,
                channel=child_sock.fileno(),
                stderr=None if isinstance(stderr, int) else stderr.fileno(),
                timeout=spec.start_timeout_s,
            )
        else:
            fd = child_sock.fileno()
            proc = await asyncio.create_subprocess_exec(
                spec.python,
                "-m",
                "sandbox.worker",
                *spec.worker_args(fd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                cwd=work_dir,
                pass_fds=(fd,),
                close_fds=True,
                start_new_session=True,
            )
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
    except BaseException:
        parent_sock.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    finally:
        child_sock.close()
        if not isinstance(stderr, int):
            stderr.close()
    return WorkerProcess(proc=proc, reader=reader, writer=writer, work_dir=work_dir)


async def reap_worker(process: WorkerProcess, grace_s: float) -> int:
    """Close the channel, wait up to ``grace_s`` for the exit, then kill; remove the temp dir."""
    process.alive = False
    process.writer.close()
    try:
        await asyncio.wait_for(process.proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.proc.kill()
        await process.proc.wait()
    shutil.rmtree(process.work_dir, ignore_errors=True)
    remove_worker_cgroup(process.work_dir.name)
    return process.proc.returncode if process.proc.returncode is not None else -1
