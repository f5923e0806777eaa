from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.keys import ApiKeyStore
from gateway.state import InitResult, init_state


@pytest.fixture
def llmos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty state directory path, exported as $LLMOS_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("LLMOS_HOME", str(home))
    return home


@pytest.fixture
def state_config(llmos_home: Path) -> Config:
    return Config.embedded(llmos_home, environ={})


@pytest.fixture
def initialised(state_config: Config) -> InitResult:
    """$LLMOS_HOME initialised without the (slow, torch-building) demo model."""
    return init_state(state_config, with_demo_model=False)


def make_expired_key(store: ApiKeyStore, db_path: Path, name: str) -> str:
    """A key whose expiry has passed: created valid, then its expiry moved into the past."""
    key, info = store.create(name, "user", "acme", expires_in=timedelta(days=1))
    past = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0).isoformat()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (past, info.id))
    db.close()
    return key
