"""The cgroup leaf, on a stand-in directory tree (this host may lack a writable cgroup v2)."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.isolation.limits import cgroup2_root, join_cgroup, own_cgroup, worker_cgroup_dir


def test_own_cgroup_reads_the_unified_line() -> None:
    assert own_cgroup("4:memory:/x\n0::/system.slice/llmos.service\n") == "/system.slice/llmos.service"
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/x\n") is None


def test_a_v1_or_hybrid_host_is_reported(tmp_path: Path) -> None:
    root, why = cgroup2_root(tmp_path)
    assert root is None and why is not None and "not a cgroup v2 mount" in why
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    root, why = cgroup2_root(tmp_path)
    assert root is None and why is not None and "memory, pids" in why


def test_join_creates_the_leaf_sets_limits_and_moves_in(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    gateway = tmp_path / "system.slice" / "llmos.service"
    gateway.mkdir(parents=True)
    (gateway / "cgroup.subtree_control").write_text("")
    assert cgroup2_root(tmp_path) == (tmp_path, None)
    leaf = worker_cgroup_dir(tmp_path, "/system.slice/llmos.service", "llmos-worker-abc")
    assert leaf == gateway / "llmos-llmos-worker-abc"
    detail = join_cgroup(leaf, 2**30, 64)
    assert (leaf / "memory.max").read_text() == str(2**30)
    assert (leaf / "pids.max").read_text() == "64"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    assert (gateway / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert "memory.max=1073741824 pids.max=64" in detail
    join_cgroup(leaf, None, None)
    assert (leaf / "memory.max").read_text() == "max"
