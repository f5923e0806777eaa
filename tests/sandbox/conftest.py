from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.demo_model import build_demo_model
from sandbox.spawner import close_fork_servers


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama on disk, shared by the whole session (treat it as read-only)."""
    path = tmp_path_factory.mktemp("demo-model")
    build_demo_model(path, seed=0)
    return path


@pytest.fixture(scope="session", autouse=True)
def _fork_servers_stop() -> Iterator[None]:
    """The shared fork server (``spawner: fork_server`` tests) lives across tests; stop it last."""
    yield
    asyncio.run(close_fork_servers())
