"""gateway.filemode: which secret files are private enough, including a Kubernetes Secret
volume's files (mode 0440, group the pod's fsGroup)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit.keys import generate_signing_key, load_private_key
from gateway.errors import AuditError, ConfigError
from gateway.filemode import too_open
from gateway.secretfile import create_secret, read_secret


@contextlib.contextmanager
def private_group(path: Path) -> Iterator[None]:
    """``path`` in a group of its own that is this process's group (as a Kubernetes fsGroup)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file and the process a private group")
    os.chown(path, -1, UNKNOWN_GID)
    os.setegid(UNKNOWN_GID)
    try:
        yield
    finally:
        os.setegid(0)


def info(mode: int, gid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


UNKNOWN_GID = 7_654_321  # in no group database: nobody else belongs to it


@pytest.mark.parametrize(
    ("mode", "gid", "expected"),
    [
        (0o600, 5, False),
        (0o400, 5, False),
        (0o440, UNKNOWN_GID, False),  # group read, our own private group: a Kubernetes Secret volume
        (0o440, 5, True),  # group read by another group
        (0o460, UNKNOWN_GID, True),  # group write
        (0o604, UNKNOWN_GID, True),  # others may read
        (0o601, UNKNOWN_GID, True),
    ],
)
def test_too_open(mode: int, gid: int, expected: bool) -> None:
    assert too_open(info(mode, gid), own_gid=UNKNOWN_GID, own_user="llmos") is expected


def test_group_read_is_refused_when_the_group_has_other_accounts() -> None:
    import grp
    import pwd

    shared = next((g for g in grp.getgrall() if g.gr_mem), None)  # a group with listed members
    if shared is None:
        pytest.skip("no group with members here")
    assert too_open(info(0o440, shared.gr_gid), own_gid=shared.gr_gid, own_user="nobody-else") is True
    primary = pwd.getpwall()[0]  # a group some account has as its primary group
    assert too_open(info(0o440, primary.pw_gid), own_gid=primary.pw_gid, own_user="nobody-else") is True


def test_a_group_readable_secret_in_our_own_group_is_read_and_others_refused(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    value = create_secret(path)
    path.chmod(0o440)
    with private_group(path):
        assert read_secret(path) == value
    path.chmod(0o444)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        read_secret(path)


def test_the_audit_key_through_a_kubernetes_style_secret_mount(tmp_path: Path) -> None:
    """kubelet writes a Secret volume as ``..data/<key>`` behind a symlink per key; a subPath
    mount (what deploy/k8s uses) shows the file itself. The key is read either way it is
    mounted as a plain file, and refused behind a symlink (never followed for a private key)."""
    source = tmp_path / "src"
    source.mkdir()
    generate_signing_key(source / "audit_signing_key.pem", source / "audit_signing_key.pub.pem")
    key = source / "audit_signing_key.pem"
    key.chmod(0o440)
    with private_group(key):
        assert load_private_key(key) is not None
    link = tmp_path / "linked.pem"
    link.symlink_to(key)
    with pytest.raises(AuditError):
        load_private_key(link)
