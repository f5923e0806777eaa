"""gateway.upstream.keys: the upstream key from a variable or a file; a rotated file is picked
up; errors never show the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.upstream.keys import KeySource


def test_the_key_comes_from_the_named_variable() -> None:
    assert KeySource(env="UP_KEY", environ={"UP_KEY": " sk-abc \n"}).current() == "sk-abc"
    assert KeySource().current() is None  # no key configured: no Authorization header


@pytest.mark.parametrize("environ", [{}, {"UP_KEY": "  "}, {"UP_KEY": "sk-a\nb"}])
def test_a_missing_or_bad_variable_fails_at_start_without_showing_it(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"\$?UP_KEY") as caught:
        KeySource(env="UP_KEY", environ=environ)
    assert "sk-a" not in str(caught.value)


def test_a_key_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-first\n")
    path.chmod(0o600)
    now = [0.0]
    keys = KeySource(file=path, clock=lambda: now[0])
    assert keys.current() == "sk-first"
    path.write_text("sk-second-longer\n")
    assert keys.current() == "sk-first"  # checked at most once a second
    now[0] = 1.5
    assert keys.current() == "sk-second-longer"
    path.unlink()
    now[0] = 3.0
    assert keys.current() == "sk-second-longer"  # a file gone mid-rotation keeps the last good key


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-secret-value")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others") as caught:
        KeySource(file=path)
    assert "sk-secret-value" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        KeySource(file=tmp_path / "missing")
