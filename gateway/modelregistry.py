"""Models added with ``llmos models add``: ``<state>/models.json``, beside those in llmos.yaml.

Each entry is a transformers model: ``{"name": ..., "path": ...}`` (an absolute path), added
only after its directory verified against a manifest signed by a trusted release key (and
verified again before every load). The gateway serves the configured models and the added
ones (names must differ); it reads the file when it starts, so a model added while it runs is
served after a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from gateway.config import Config, ModelConfig
from gateway.errors import ConfigError
from sandbox.manifest import load_public_keys

REGISTRY_FILE = "models.json"


def release_public_keys(config: Config) -> list[Ed25519PublicKey]:
    """The release keys model manifests may be signed by: the state directory's own and
    ``model_trust.public_keys``. ManifestError if one cannot be loaded."""
    return load_public_keys([config.release_public_key, *config.model_trust.public_keys])


def registry_path(config: Config) -> Path:
    return config.state_dir / REGISTRY_FILE


def load_registry(config: Config) -> list[ModelConfig]:
    """The added models; ConfigError naming the file and entry if it is unusable."""
    path = registry_path(config)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); fix or remove it") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ConfigError(f'{path}: expected {{"models": [...]}}')
    models = []
    for index, item in enumerate(doc["models"]):
        try:
            models.append(ModelConfig.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: models[{index}].{key}: {first['msg']}") from exc
    return models


def all_models(config: Config) -> list[ModelConfig]:
    """The configured models, then the added ones; ConfigError on a name used twice."""
    configured = config.model_list
    added = load_registry(config)
    taken = {m.name for m in configured}
    for model in added:
        if model.name in taken:
            raise ConfigError(
                f"{registry_path(config)}: model {model.name!r} is also in the configuration;"
                " remove one of them"
            )
        taken.add(model.name)
    return [*configured, *added]


def add_model(config: Config, name: str, path: Path) -> None:
    """Record a (verified) model directory under ``name``; ConfigError if the name is taken."""
    model = ModelConfig(name=name, path=path.resolve())
    existing = all_models(config)
    if any(m.name == name for m in existing):
        raise ConfigError(f"a model named {name!r} already exists; pick another name")
    added = [*load_registry(config), model]
    doc = {"models": [{"name": m.name, "path": str(m.path)} for m in added]}
    target = registry_path(config)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def set_model_path(config: Config, name: str, path: Path) -> bool:
    """Point an added model at a new directory (after ``llmos models update``); False if
    ``name`` is not an added model (a configured one: llmos.yaml is the operator's to edit)."""
    added = load_registry(config)
    if not any(m.name == name for m in added):
        return False
    doc = {
        "models": [{"name": m.name, "path": str(path.resolve() if m.name == name else m.path)} for m in added]
    }
    target = registry_path(config)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return True
