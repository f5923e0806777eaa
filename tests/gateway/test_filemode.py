"""gateway.filemode: which secret files are private enough, including a Kubernetes Secret
volume's files (mode 0440, group the pod's fsGroup)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.audit.keys import generate_signing_key, load_private_key
from gateway.errors import AuditError, ConfigError
from gateway.filemode import too_open
from gateway.secretfile import create_secret, read_secret


def info(mode: int, gid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 0, 0, 1, 0, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "gid", "expected"),
    [
        (0o600, 5, False),
        (0o400, 5, False),
        (0o440, 7, False),  # group read, the process's own group: a Kubernetes Secret volume
        (0o440, 5, True),  # group read by another group
        (0o460, 7, True),  # group write
        (0o604, 7, True),  # others may read
        (0o601, 7, True),
    ],
)
def test_too_open(mode: int, gid: int, expected: bool) -> None:
    assert too_open(info(mode, gid), own_gid=7) is expected


def test_a_group_readable_secret_in_our_own_group_is_read_and_others_refused(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    value = create_secret(path)
    path.chmod(0o440)
    if path.stat().st_gid == os.getegid():
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
    assert load_private_key(key) is not None
    link = tmp_path / "linked.pem"
    link.symlink_to(key)
    with pytest.raises(AuditError):
        load_private_key(link)
