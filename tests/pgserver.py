"""A throwaway PostgreSQL server for tests: a new cluster in a temporary directory, reached over
a Unix socket only (no TCP port), stopped and deleted afterwards.

``postgres`` refuses to run as root: when the tests run as root (CI), the cluster belongs to
the ``postgres`` system user (Debian's package creates it) and the server runs as that user.
The binaries come from ``pg_config --bindir`` or ``/usr/lib/postgresql/<version>/bin``;
without them the fixture skips with the reason (``make services`` installs them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PgServer:
    socket_dir: Path
    port: int
    user: str = "llmos"
    dbname: str = "postgres"

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={self.user} dbname={self.dbname}"


def bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(versions[-1]) if versions else None


def _owner() -> tuple[int, int] | None:
    """The uid/gid the cluster runs as: ours, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no 'postgres' user to run the server") from exc
    return entry.pw_uid, entry.pw_gid


def _as(owner: tuple[int, int] | None) -> dict[str, object]:
    if owner is None:
        return {}
    return {"user": owner[0], "group": owner[1], "extra_groups": []}


@contextlib.contextmanager
def pg_server(port: int = 55432) -> Iterator[PgServer]:
    """Start a new cluster; yield how to reach it; stop and delete it."""
    binaries = bindir()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) are not installed")
    owner = _owner()
    root = Path(tempfile.mkdtemp(prefix="llmos-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if owner is not None:
        os.chown(root, *owner)
        os.chown(sockets, *owner)
    root.chmod(0o755)
    log = root / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "llmos",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **_as(owner),  # type: ignore[arg-type]
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(binaries / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(sockets),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "max_connections=100",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                **_as(owner),  # type: ignore[arg-type]
            )
        server = PgServer(sockets, port)
        _wait_ready(binaries, server, proc, log)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown (SIGTERM would wait for clients)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(binaries: Path, server: PgServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        ready = subprocess.run(
            [
                str(binaries / "pg_isready"),
                "-h",
                str(server.socket_dir),
                "-p",
                str(server.port),
                "-U",
                server.user,
            ],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres did not accept connections within {START_TIMEOUT_S:.0f} s")
