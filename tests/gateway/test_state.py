from __future__ import annotations

import stat
from importlib import resources
from pathlib import Path

import pytest

from gateway.audit.keys import load_private_key, load_public_key
from gateway.audit.verify import verify_log
from gateway.config import Config
from gateway.errors import ConfigError
from gateway.keys import KEY_PREFIX
from gateway.secretfile import read_secret
from gateway.state import ADMIN_KEY_NAME, InitResult, copy_default_policies, init_state, open_key_store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _package_policies() -> dict[str, bytes]:
    return {
        f.name: f.read_bytes()
        for f in resources.files("policies").iterdir()
        if f.is_file() and f.name.endswith((".rego", ".json"))
    }


def test_init_creates_the_layout(state_config: Config, initialised: InitResult) -> None:
    c = state_config

    assert initialised.state_dir == c.state_dir
    assert _mode(c.state_dir) == 0o700
    assert (c.state_dir / "logs").is_dir()
    for secret in (c.pepper_file, c.digest_key_file, c.signing_key):
        assert _mode(secret) == 0o600, secret
    assert len(read_secret(c.pepper_file)) >= 16
    assert len(read_secret(c.digest_key_file)) >= 16
    assert read_secret(c.pepper_file) != read_secret(c.digest_key_file)
    private, public = load_private_key(c.signing_key), load_public_key(c.public_key)
    assert private.public_key() == public
    assert verify_log(c.audit_db, public).entries == 0
    assert c.keys_db.is_file()


def test_init_copies_the_packaged_policies(state_config: Config, initialised: InitResult) -> None:
    copied = {p.name: p.read_bytes() for p in state_config.policy_dir.iterdir()}

    assert copied == _package_policies()
    assert {"authz.rego", "authz_test.rego"} <= set(copied)


def test_init_without_demo_model_builds_no_model(state_config: Config, initialised: InitResult) -> None:
    assert not state_config.demo_model_dir.exists()


def test_admin_key_is_returned_once_and_works(state_config: Config, initialised: InitResult) -> None:
    assert initialised.admin_key is not None
    assert initialised.admin_key.startswith(KEY_PREFIX)
    assert "admin API key" in initialised.created
    info = open_key_store(state_config).authenticate(initialised.admin_key)
    assert info is not None
    assert (info.name, info.role, info.tenant) == (ADMIN_KEY_NAME, "admin", "default")

    again = init_state(state_config, with_demo_model=False)

    assert again.admin_key is None
    assert again.created == ()
    assert [k.name for k in open_key_store(state_config).list()] == [ADMIN_KEY_NAME]


def test_created_lists_what_was_made(state_config: Config, initialised: InitResult) -> None:
    c = state_config
    for path in (c.state_dir, c.pepper_file, c.digest_key_file, c.signing_key, c.audit_db, c.policy_dir):
        assert str(path) in initialised.created


def test_a_second_init_overwrites_nothing(state_config: Config, initialised: InitResult) -> None:
    c = state_config
    files = [c.pepper_file, c.digest_key_file, c.signing_key, c.public_key, c.audit_db, c.keys_db]
    before = {p: p.read_bytes() for p in files}
    edited = c.policy_dir / "authz.rego"
    edited.write_text("package llmos.authz\n# edited by the operator\n")

    init_state(c, with_demo_model=False)

    assert {p: p.read_bytes() for p in files} == before
    assert edited.read_text() == "package llmos.authz\n# edited by the operator\n"


def test_a_missing_piece_is_recreated_and_the_rest_kept(
    state_config: Config, initialised: InitResult
) -> None:
    c = state_config
    pepper = c.pepper_file.read_bytes()
    c.digest_key_file.unlink()

    result = init_state(c, with_demo_model=False)

    assert result.created == (str(c.digest_key_file),)
    assert c.digest_key_file.exists()
    assert c.pepper_file.read_bytes() == pepper


def test_init_tightens_an_existing_state_dir(state_config: Config) -> None:
    state_config.state_dir.mkdir(mode=0o755)
    state_config.state_dir.chmod(0o755)

    result = init_state(state_config, with_demo_model=False)

    assert _mode(state_config.state_dir) == 0o700
    assert str(state_config.state_dir) not in result.created
    assert result.admin_key is not None


def test_a_public_key_without_its_private_key_is_refused(
    state_config: Config, initialised: InitResult
) -> None:
    public = state_config.public_key.read_bytes()
    state_config.signing_key.unlink()

    with pytest.raises(ConfigError, match="a public key exists without its private key"):
        init_state(state_config, with_demo_model=False)
    assert state_config.public_key.read_bytes() == public
    assert not state_config.signing_key.exists()


def test_copy_default_policies_keeps_existing_files(tmp_path: Path) -> None:
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "authz.rego").write_text("mine")

    copy_default_policies(dest)

    assert (dest / "authz.rego").read_text() == "mine"
    assert (dest / "authz_test.rego").read_bytes() == _package_policies()["authz_test.rego"]
    assert not (dest / "__init__.py").exists()


def test_open_key_store_on_an_uninitialised_dir(state_config: Config) -> None:
    with pytest.raises(ConfigError) as info:
        open_key_store(state_config)

    message = str(info.value)
    assert "Run `llmos init` first." in message
    assert str(state_config.pepper_file) in message
    assert not state_config.state_dir.exists()


def test_open_key_store_refuses_a_readable_pepper(state_config: Config, initialised: InitResult) -> None:
    state_config.pepper_file.chmod(0o644)

    with pytest.raises(ConfigError, match="chmod 600"):
        open_key_store(state_config)
