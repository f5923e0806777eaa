"""gateway.runtime: upstream entries become upstream models (key and canaries checked at start),
and every unsafe_disable entry is announced in the log."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import yaml

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.runtime import build_upstream, install_blocking_pool, warn_unsafe
from sandbox.canaries import CanaryFileError


def upstream_config(tmp_path: Path, extra: str = "", key: str = "api_key_env: LLMOS_TEST_UP_KEY") -> Config:
    return Config.from_mapping(
        yaml.safe_load(
            f"models:\n  - {{name: gpt, kind: upstream, {extra} upstream: {{base_url: 'http://127.0.0.1:9/v1', {key}}}}}\n"
        ),
        source="llmos.yaml",
        base_dir=tmp_path,
    )


def test_an_upstream_model_is_built_with_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_TEST_UP_KEY", "sk-up-123")
    model = build_upstream(upstream_config(tmp_path).model_list[0])
    assert (model.name, model.model, model.base_url) == ("gpt", "gpt", "http://127.0.0.1:9/v1/")
    assert model.keys.current() == "sk-up-123"
    assert model.state == "ready" and model.remote


def test_a_missing_key_or_canary_file_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMOS_TEST_UP_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"model 'gpt': .*LLMOS_TEST_UP_KEY is not set"):
        build_upstream(upstream_config(tmp_path).model_list[0])
    monkeypatch.setenv("LLMOS_TEST_UP_KEY", "sk-up-123")
    with pytest.raises(CanaryFileError, match="model 'gpt': canary_file"):
        build_upstream(upstream_config(tmp_path, "canary_file: missing.txt,").model_list[0])


def test_every_disabled_safeguard_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config.from_mapping(
        {"unsafe_disable": ["policy", "pii", "audit"]}, source="x", base_dir=tmp_path
    )
    with caplog.at_level(logging.WARNING, logger="llmos.gateway"):
        warn_unsafe(config)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all(line.startswith("UNSAFE: unsafe_disable lists") for line in lines)
    caplog.clear()
    warn_unsafe(Config.embedded(tmp_path))
    assert caplog.records == []


@pytest.mark.parametrize("content", [None, "not a certificate\n"], ids=["missing", "garbage"])
def test_an_unusable_ca_file_fails_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    monkeypatch.setenv("LLMOS_TEST_UP_KEY", "sk-up-123")
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    model = upstream_config(tmp_path, key="api_key_env: LLMOS_TEST_UP_KEY, ca_file: ca.pem").model_list[0]
    with pytest.raises(ConfigError, match=r"model 'gpt': upstream.ca_file: .*ca.pem: not a usable CA bundle"):
        build_upstream(model)


def test_the_blocking_pool_has_the_configured_threads() -> None:
    """40 blocking calls that wait for each other all run at once: more than asyncio's own
    default pool has on any machine (at most 32 threads)."""
    calls = 40
    barrier = threading.Barrier(calls, timeout=10)

    async def main() -> list[int]:
        install_blocking_pool(calls)
        return await asyncio.gather(*(asyncio.to_thread(barrier.wait) for _ in range(calls)))

    assert sorted(asyncio.run(main())) == list(range(calls))


def test_blocking_threads_is_validated(tmp_path: Path) -> None:
    assert Config.embedded(tmp_path).server.blocking_threads == 64
    with pytest.raises(ConfigError, match="blocking_threads"):
        Config.from_mapping({"server": {"blocking_threads": 2}}, source="x", base_dir=tmp_path)
