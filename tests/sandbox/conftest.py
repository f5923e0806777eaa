from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.demo_model import build_demo_model


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama on disk, shared by the whole session (treat it as read-only)."""
    path = tmp_path_factory.mktemp("demo-model")
    build_demo_model(path, seed=0)
    return path
