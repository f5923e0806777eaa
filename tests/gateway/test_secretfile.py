from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.secretfile import create_secret, read_secret, read_secret_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "pepper"

    value = create_secret(path)

    assert len(value) == 32
    assert read_secret(path) == value
    assert path.read_text(encoding="ascii") == value.hex() + "\n"


def test_created_with_mode_0600_in_a_0700_dir_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new-dir" / "s"
        create_secret(path)
    finally:
        os.umask(old)

    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_values_are_random(tmp_path: Path) -> None:
    assert create_secret(tmp_path / "a") != create_secret(tmp_path / "b")


def test_nbytes(tmp_path: Path) -> None:
    assert len(create_secret(tmp_path / "s", nbytes=48)) == 48


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "s"
    first = create_secret(path)

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        create_secret(path)
    assert read_secret(path) == first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602, 0o610, 0o601, 0o777])
def test_group_or_other_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s"
    create_secret(path)
    path.chmod(mode)
    if os.getegid() == path.stat().st_gid:  # group read is allowed for our own group only
        try:
            os.chown(path, -1, os.getegid() + 4242)
        except PermissionError:
            pytest.skip("cannot give the file another group here")

    with pytest.raises(ConfigError) as info:
        read_secret(path)

    assert str(info.value) == (
        f"{path}: secret file is accessible by group or others; fix with: chmod 600 {path}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "s"
    value = create_secret(path)
    path.chmod(mode)

    assert read_secret(path) == value


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("text", ["not hex at all", "abc", "zz" * 16, "0x" + "ab" * 16])
def test_non_hex_is_refused(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "s", text)

    with pytest.raises(ConfigError, match=r"not hex-encoded$"):
        read_secret(path)


@pytest.mark.parametrize(
    ("text", "ok"), [("", False), ("ab" * 15, False), ("ab" * 16, True), ("AB" * 16 + "\n", True)]
)
def test_at_least_16_bytes(tmp_path: Path, text: str, ok: bool) -> None:
    path = _write(tmp_path / "s", text)

    if ok:
        assert len(read_secret(path)) == 16
    else:
        with pytest.raises(ConfigError, match="too short"):
            read_secret(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(tmp_path / "nope")


def test_non_ascii_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes("é".encode() * 20)
    path.chmod(0o600)

    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(path)


def test_error_never_contains_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "s"
    value = create_secret(path)
    path.chmod(0o644)

    with pytest.raises(ConfigError) as info:
        read_secret(path)

    assert value.hex() not in str(info.value)


def test_a_text_secret_is_one_private_line_never_shown(tmp_path: Path) -> None:
    dsn = "host=db user=llmos password=hunter2-not-shown"
    path = _write(tmp_path / "dsn", dsn + "\n")
    assert read_secret_text(path, "audit.postgres_dsn_file") == dsn
    for text, why in (("", "must be one non-empty line"), (dsn + "\nsecond line", "must be one non-empty line")):
        with pytest.raises(ConfigError, match=why) as caught:
            read_secret_text(_write(tmp_path / "bad", text), "audit.postgres_dsn_file")
        assert "hunter2" not in str(caught.value)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"audit.postgres_dsn_file is accessible by group or others") as caught:
        read_secret_text(path, "audit.postgres_dsn_file")
    assert "hunter2" not in str(caught.value)
