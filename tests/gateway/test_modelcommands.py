"""`llmos models keygen|sign|add|list` against a real state directory."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.modelregistry import all_models, load_registry, registry_path
from gateway.state import InitResult
from sandbox.manifest import MANIFEST_FILE, read_manifest


def fake_model(path: Path) -> Path:
    """A model directory as far as manifests care: safetensors weights and a config."""
    path.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    (path / "config.json").write_text('{"model_type": "llama"}')
    return path


def test_sign_add_list_then_a_tampered_file_is_refused(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_model(tmp_path / "m")
    assert main(["models", "sign", str(model)]) == 0
    assert "BF16, 6 parameters" in capsys.readouterr().out
    assert main(["models", "add", "tiny", str(model)]) == 0
    assert "restart the gateway to serve it" in capsys.readouterr().out
    assert [m.name for m in load_registry(state_config)] == ["tiny"]
    assert [m.name for m in all_models(state_config)] == ["demo", "tiny"]
    assert main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows["tiny"]["manifest"] == "verified" and rows["tiny"]["source"] == "added"
    assert rows["tiny"]["digest"] == read_manifest(model).digest
    (model / "config.json").write_text('{"model_type": "evil"}')
    assert main(["models", "list"]) == 0
    assert "tiny (transformers, added)" in (out := capsys.readouterr().out)
    assert "REFUSED manifest_file_changed" in out and "config.json does not match" in out


def test_a_model_signed_by_an_untrusted_key_is_not_added(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_model(tmp_path / "m")
    assert main(["models", "keygen", "--out", str(tmp_path / "other.pem")]) == 0
    assert (tmp_path / "other.pub.pem").exists()
    capsys.readouterr()
    assert main(["models", "sign", str(model), "--key", str(tmp_path / "other.pem")]) == 0
    capsys.readouterr()
    assert main(["models", "add", "tiny", str(model)]) == 1
    assert "manifest_signature_invalid" in capsys.readouterr().out
    assert not registry_path(state_config).exists()


def test_add_refuses_unsigned_directories_and_taken_names(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = fake_model(tmp_path / "m")
    assert main(["models", "add", "tiny", str(model)]) == 1
    assert "manifest_missing" in capsys.readouterr().out
    assert main(["models", "sign", str(model)]) == 0
    assert main(["models", "add", "demo", str(model)]) == 2  # the configured demo model's name
    assert "already exists" in capsys.readouterr().err
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    assert main(["models", "sign", str(model)]) == 1
    assert "unsafe_weights" in capsys.readouterr().out
    assert MANIFEST_FILE in {p.name for p in model.iterdir()}  # the old manifest stays as it was


def test_a_broken_registry_names_the_file(initialised: InitResult, state_config: Config) -> None:
    registry_path(state_config).write_text('{"models": [{"name": "bad name!", "path": "/x"}]}')
    with pytest.raises(ConfigError, match=r"models\.json: models\[0\]\.name"):
        load_registry(state_config)
    registry_path(state_config).write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        all_models(state_config)


def test_init_makes_a_release_key_pair(initialised: InitResult, state_config: Config) -> None:
    assert state_config.release_key.exists() and state_config.release_public_key.exists()
    assert state_config.release_key.stat().st_mode & 0o077 == 0
