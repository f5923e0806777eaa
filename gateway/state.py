"""The state directory (``./.llmos`` or ``$LLMOS_HOME``): created once by ``llmos init``.

    .llmos/                          mode 0700
      secrets/api_key_pepper         HMAC key for stored API key hashes (0600)
      secrets/audit_signing_key.pem  Ed25519 private key signing audit entries (0600)
      secrets/audit_digest_key       HMAC key for request/response digests (0600)
      secrets/model_release_key.pem  Ed25519 key signing model manifests (0600; ``llmos models sign``)
      audit_signing_key.pub.pem      the public key auditors verify with
      model_release_key.pub.pem      the release key's public half, always trusted by this gateway
      keys.db                        API keys (keyed hashes only)
      audit.db                       the audit log (SQLite, WAL)
      policies/                      the default Rego policy, copied from the package
      models/demo/                   a tiny random-weight Llama (gibberish output), signed
      models.json                    models added with ``llmos models add`` (gateway/modelregistry.py)
      logs/                          model worker logs

Initialisation is idempotent: it creates what is missing and never overwrites a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gateway.audit.keys import generate_signing_key, load_private_key
from gateway.audit.log import AuditLog
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.keys import ApiKeyStore
from gateway.secretfile import create_secret, read_secret
from sandbox.manifest import MANIFEST_FILE, build_manifest, sign, write_manifest

ADMIN_KEY_NAME = "admin"


@dataclass(frozen=True)
class InitResult:
    state_dir: Path
    created: tuple[str, ...]  # what this call created, for the operator's log
    admin_key: str | None  # the new admin key, shown once; None if one already existed


def _secret(path: Path, created: list[str]) -> None:
    if not path.exists():
        create_secret(path)
        created.append(str(path))


def copy_default_policies(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for item in resources.files("policies").iterdir():
        if item.name.endswith((".rego", ".json")) and item.is_file():
            target = dest / item.name
            if not target.exists():
                target.write_bytes(item.read_bytes())


def init_state(config: Config, *, with_demo_model: bool = True, admin_key: bool = True) -> InitResult:
    """Create what is missing in the state directory. ``admin_key``: also the first API key
    (returned once); without it nothing secret is returned (keys come from ``llmos keys create``)."""
    created: list[str] = []
    state = config.state_dir
    if not state.exists():
        state.mkdir(parents=True, mode=0o700)
        created.append(str(state))
    os.chmod(state, 0o700)
    (state / "logs").mkdir(exist_ok=True)

    _secret(config.pepper_file, created)
    _secret(config.digest_key_file, created)
    if not config.signing_key.exists():
        if config.public_key.exists():
            raise ConfigError(
                f"{config.public_key}: a public key exists without its private key {config.signing_key};"
                " move it away to create a new key pair"
            )
        generate_signing_key(config.signing_key, config.public_key)
        created.append(str(config.signing_key))

    if not config.release_key.exists():
        if config.release_public_key.exists():
            raise ConfigError(
                f"{config.release_public_key}: a public key exists without its private key"
                f" {config.release_key}; move it away to create a new key pair"
            )
        generate_signing_key(config.release_key, config.release_public_key)
        created.append(str(config.release_key))

    if config.audit.backend == "sqlite" and not config.audit_db.exists():
        AuditLog(config.audit_db, load_private_key(config.signing_key)).close()
        created.append(str(config.audit_db))

    if not config.policy_dir.exists():
        copy_default_policies(config.policy_dir)
        created.append(str(config.policy_dir))

    demo = config.demo_model_dir
    uses_demo = any(m.path == demo for m in config.model_list)
    if with_demo_model and uses_demo and not (demo / "config.json").exists():
        build_demo_model(demo)
        created.append(str(demo))
    if uses_demo and (demo / "config.json").exists() and not (demo / MANIFEST_FILE).exists():
        # Our own build (or one from before manifests): sign it with the local release key.
        key = load_private_key(config.release_key, what="model release key")
        write_manifest(demo, sign(build_manifest(demo), key))
        created.append(str(demo / MANIFEST_FILE))

    keys = open_key_store(config)
    plaintext = None
    if admin_key and not keys.has_key(ADMIN_KEY_NAME):
        plaintext, _ = keys.create(ADMIN_KEY_NAME, "admin", "default")
        created.append("admin API key")
    return InitResult(state_dir=state, created=tuple(created), admin_key=plaintext)


def build_demo_model(dest: Path) -> None:
    """Build the demo model in a child process: torch never loads into the gateway (it also
    clashes with rego-cpp's time builtins in one process)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.demo_model", str(tmp)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ConfigError(f"{dest}: could not build the demo model:\n{tail}")
    tmp.rename(dest)


def open_key_store(config: Config) -> ApiKeyStore:
    if not config.pepper_file.exists():
        raise ConfigError(
            f"{config.pepper_file}: missing; the state directory {config.state_dir} is not initialised."
            " Run `llmos init` first."
        )
    return ApiKeyStore(config.keys_db, read_secret(config.pepper_file))
