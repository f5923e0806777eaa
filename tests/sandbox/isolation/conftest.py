from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.isolation import build_worker_env

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CHILD = Path(__file__).with_name("child.py")

RunChild = Callable[..., dict[str, Any]]


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port listening on 127.0.0.1 in the test's own network namespace."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        yield srv.getsockname()[1]


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A worker temp dir under /tmp itself (pytest's tmp dirs are 0700 root: no use to uid 65534)."""
    path = Path(tempfile.mkdtemp(prefix="llmos-test-worker-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def outside_file() -> Iterator[Path]:
    """A world-readable file outside every allowed path."""
    fd, name = tempfile.mkstemp(prefix="llmos-test-outside-")
    os.write(fd, b"not for the worker")
    os.close(fd)
    os.chmod(name, 0o644)
    yield Path(name)
    os.unlink(name)


@pytest.fixture
def run_child(work_dir: Path) -> RunChild:
    def run(layers: list[str], checks: list[tuple[str, object]], **spec: Any) -> dict[str, Any]:
        spec = {"work_dir": str(work_dir), "layers": layers, "checks": checks, **spec}
        out = subprocess.run(
            [sys.executable, str(CHILD), json.dumps(spec)],
            env=build_worker_env(work_dir, pythonpath=str(PROJECT_ROOT)),
            cwd=work_dir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"child failed ({out.returncode}): {out.stderr[-3000:]}")
        return dict(json.loads(out.stdout))

    return run
