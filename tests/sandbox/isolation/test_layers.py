"""Each layer applied for real in a fresh child interpreter, and shown to block what it should."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from sandbox.isolation.landlock import abi_version
from sandbox.isolation.probe import probe_host, support_from
from tests.sandbox.isolation.conftest import RunChild

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the layers are Linux only")
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (network namespace without userns, uid drop)")
needs_landlock = pytest.mark.skipif(abi_version()[0] == 0, reason="the kernel has no Landlock")
needs_seccomp = pytest.mark.skipif(not probe_host().libseccomp, reason="libseccomp.so.2 is not installed")
REFUSED = {f"refused:{errno.EPERM}", f"refused:{errno.EACCES}"}


@needs_root
def test_a_network_namespace_cannot_reach_the_parents_loopback(run_child: RunChild, listener: int) -> None:
    assert run_child([], [("tcp", listener)])["results"] == ["ok"]  # the control
    out = run_child(["netns"], [("tcp", listener), ("socket_inet", None)])
    assert out["applied"]["netns"] == "netns"
    tcp, socket_inet = out["results"]
    assert tcp == f"refused:{errno.ENETUNREACH}"  # only a (down) loopback of its own
    assert socket_inet == "ok"  # sockets exist; there is just nowhere to go


@needs_seccomp
def test_seccomp_refuses_inet_sockets_ptrace_and_unshare_but_not_unix_sockets(
    run_child: RunChild, listener: int
) -> None:
    checks = [("socket_inet", None), ("tcp", listener), ("socket_unix", None), ("ptrace_traceme", None)]
    if ROOT:
        assert run_child([], [("unshare_uts", None)])["results"] == ["ok"]  # the control
        checks.append(("unshare_uts", None))
    results = run_child(["seccomp"], checks)["results"]
    assert results[0] == results[1] == results[3] == f"refused:{errno.EPERM}"
    assert results[2] == "ok"
    if ROOT:
        assert results[4] == f"refused:{errno.EPERM}"


@needs_landlock
def test_landlock_confines_reads_writes_and_exec(
    run_child: RunChild, work_dir: Path, outside_file: Path
) -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    checks: list[tuple[str, object]] = [
        ("read", str(outside_file)),
        ("read", "/etc/shadow"),
        ("list", "/root"),
        ("write", str(outside_file.with_name(outside_file.name + "-new"))),
        ("exec", "/bin/sh"),
        ("write", str(work_dir / "inside")),
        ("read", str(work_dir / "inside")),
        ("list", site),
        ("read", "/etc/ld.so.cache"),
    ]
    control = run_child([], checks[:2])["results"]
    assert control[0] == "ok"
    results = run_child(["landlock"], checks)["results"]
    assert set(results[:5]) <= REFUSED, results
    assert results[5:] == ["ok"] * 4
    assert not outside_file.with_name(outside_file.name + "-new").exists()


def test_rlimit_as_stops_a_big_allocation(run_child: RunChild) -> None:
    results = run_child(["rlimits"], [("alloc", 2**20), ("alloc", 2 * 2**30)], memory=1024 * 2**20)["results"]
    assert results == ["ok", "refused:memory"]


@needs_root
@needs_landlock
def test_the_uid_drop_leaves_an_unprivileged_process(
    run_child: RunChild, work_dir: Path, outside_file: Path
) -> None:
    checks: list[tuple[str, object]] = [
        ("uid", None), ("groups", None), ("write", str(work_dir / "mine")), ("read", "/etc/shadow"),
        ("read", str(outside_file)), ("list", "/root"),
    ]  # fmt: skip
    out = run_child(["uid", "landlock"], checks)
    assert "uid 65534" in out["applied"]["uid"]
    uid, groups, write, shadow, outside, root_home = out["results"]
    assert uid == [65534, 65534, 65534] and groups == []
    assert write == "ok"
    assert (work_dir / "mine").stat().st_uid == 65534
    assert {shadow, outside} <= REFUSED  # CAP_DAC_READ_SEARCH is kept, but Landlock still confines reads
    assert root_home in REFUSED


@needs_root
@needs_landlock
@needs_seccomp
def test_everything_together_as_root(run_child: RunChild, listener: int, outside_file: Path) -> None:
    out = run_child(
        ["all"],
        [
            ("tcp", listener),
            ("read", str(outside_file)),
            ("exec", "/bin/sh"),
            ("uid", None),
            ("ptrace_traceme", None),
        ],
    )
    layers = {layer["name"]: layer for layer in out["applied"]["all"]["layers"]}
    supported = {s.layer for s in support_from(probe_host()) if s.supported}
    for name, layer in layers.items():
        assert layer["applied"] == (name in supported), layer
    assert "private network namespace (netns)" in layers["network"]["detail"]
    tcp, outside, sh, uid, ptrace = out["results"]
    assert {tcp, outside, sh, ptrace} <= REFUSED
    assert uid == [65534] * 3


@needs_root  # to become an unprivileged user at all
@needs_landlock
@needs_seccomp
def test_a_gateway_without_root_and_without_namespaces_degrades_explicitly(
    run_child: RunChild, listener: int, outside_file: Path
) -> None:
    # A child that was never root, in a container whose seccomp profile forbids unshare.
    out = run_child(
        ["deny_unshare", "all"],
        [("tcp", listener), ("socket_inet", None), ("socket_unix", None), ("read", str(outside_file))],
        become=65534,
    )
    layers = {layer["name"]: layer for layer in out["applied"]["all"]["layers"]}
    assert layers["network"]["status"] == "applied"
    assert "no network namespace" in layers["network"]["detail"]
    assert "seccomp refuses every socket but AF_UNIX" in layers["network"]["detail"]
    assert layers["uid"]["status"] == "not_needed"
    assert layers["cgroup"]["status"] in ("unavailable", "failed")  # /sys/fs/cgroup is root's
    assert "nproc counts the" in layers["rlimits"]["detail"]  # the uid's processes + its allowance
    assert layers["filesystem"]["status"] == layers["seccomp"]["status"] == "applied"
    tcp, socket_inet, socket_unix, outside = out["results"]
    assert tcp == socket_inet == f"refused:{errno.EPERM}"
    assert socket_unix == "ok"
    assert outside in REFUSED


@needs_root  # to become an unprivileged user at all
@needs_landlock
@needs_seccomp
def test_the_non_root_path_blocks_the_hostile_model_attacks_too(
    run_child: RunChild, outside_file: Path, tmp_path: Path
) -> None:
    writable = tmp_path / "world-writable"
    writable.mkdir()
    writable.chmod(0o1777)  # the uid may write here: only Landlock stops it
    settings = {"max_processes": 32, "memory_limit_bytes": 512 * 2**20}
    out = run_child(
        ["all"],
        [
            ("read", str(outside_file)),
            ("read", "/etc/shadow"),
            ("write", str(writable / "x")),
            ("exec", "/bin/sh"),
            ("forks", "2000"),
            ("alloc", str(1024 * 2**20)),
        ],
        become=65534,
        settings=settings,
    )
    layers = {layer["name"]: layer for layer in out["applied"]["all"]["layers"]}
    assert layers["uid"]["status"] == "not_needed"
    assert "nproc counts the" in layers["rlimits"]["detail"]
    outside, shadow, write, exec_sh, forks, alloc = out["results"]
    assert outside in REFUSED and shadow in REFUSED and write in REFUSED and exec_sh in REFUSED
    assert forks == f"refused:{errno.EAGAIN}"  # the fork bomb stopped at the uid's count + 32
    assert alloc == "refused:memory"
    assert not (writable / "x").exists()


@needs_root
def test_a_gateway_without_root_gets_a_network_namespace_through_a_user_namespace(
    run_child: RunChild, listener: int
) -> None:
    if not probe_host().userns:
        pytest.skip("unprivileged user namespaces are off on this host")
    out = run_child(["netns"], [("tcp", listener), ("uid", None)], become=65534)
    assert out["applied"]["netns"] == "userns+netns"
    assert out["results"] == [f"refused:{errno.ENETUNREACH}", [65534] * 3]
