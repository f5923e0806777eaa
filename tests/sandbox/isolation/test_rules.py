"""The Landlock rules a worker gets, computed without touching the filesystem."""

from __future__ import annotations

import pytest

from sandbox.isolation.rules import (
    EXECUTE,
    FILE_RIGHTS,
    IOCTL_DEV,
    READ_DIR,
    READ_FILE,
    REFER,
    TRUNCATE,
    WRITE_FILE,
    FsPlan,
    Rule,
    fs_rights_for_abi,
    gpu_device_files,
    landlock_rules,
)

PLAN = FsPlan(
    work_dir="/tmp/llmos-worker-x",
    runtime_dirs=("/opt/py", "/opt/venv/lib/python3.11/site-packages", "/opt/py/"),
    model_dir="/models/m",
)


def by_path(plan: FsPlan, abi: int) -> dict[str, Rule]:
    return {r.path: r for r in landlock_rules(plan, abi).rules}


def test_reads_the_runtime_and_model_writes_only_the_work_dir_executes_nothing() -> None:
    rules = by_path(PLAN, 7)
    assert rules["/models/m"].access == READ_FILE | READ_DIR
    assert rules["/opt/py"].access == READ_FILE | READ_DIR  # "/opt/py/" merged into it
    writable = [p for p, r in rules.items() if r.access & WRITE_FILE]
    assert sorted(writable) == ["/dev/null", "/tmp/llmos-worker-x"]
    assert not any(r.access & EXECUTE for r in rules.values())
    assert "/usr/bin" not in rules and "/bin" not in rules and "/etc" not in rules and "/" not in rules
    assert not any(p.startswith("/dev/nvidia") for p in rules) and "/dev/shm" not in rules


def test_file_rules_carry_only_file_rights() -> None:
    for abi in range(1, 8):
        for rule in landlock_rules(PLAN, abi).rules:
            if not rule.is_dir:
                assert rule.access & ~FILE_RIGHTS == 0, rule
    with pytest.raises(ValueError, match="only file rights"):
        Rule("/etc/ld.so.cache", READ_FILE | READ_DIR, is_dir=False)


@pytest.mark.parametrize(
    ("abi", "has_refer", "has_truncate", "has_ioctl", "net", "scoped"),
    [(1, False, False, False, 0, 0), (2, True, False, False, 0, 0), (3, True, True, False, 0, 0),
     (4, True, True, False, 3, 0), (5, True, True, True, 3, 0), (6, True, True, True, 3, 3),
     (7, True, True, True, 3, 3)],
)  # fmt: skip
def test_rights_the_abi_lacks_are_masked_out(
    abi: int, has_refer: bool, has_truncate: bool, has_ioctl: bool, net: int, scoped: int
) -> None:
    ruleset = landlock_rules(PLAN, abi)
    assert ruleset.handled_fs == fs_rights_for_abi(abi)
    assert (ruleset.handled_net, ruleset.scoped) == (net, scoped)
    for rule in ruleset.rules:
        assert rule.access & ~ruleset.handled_fs == 0
    work = by_path(PLAN, abi)["/tmp/llmos-worker-x"].access
    assert bool(work & REFER) == has_refer and bool(work & TRUNCATE) == has_truncate
    assert bool(ruleset.handled_fs & IOCTL_DEV) == has_ioctl


def test_gpu_rules_allow_the_assigned_devices_only() -> None:
    plan = FsPlan(work_dir="/w", runtime_dirs=(), gpus=(2, 0))
    rules = by_path(plan, 7)
    devices = sorted(p for p in rules if p.startswith("/dev/"))
    assert devices == [
        "/dev/null", "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0",
        "/dev/nvidia2", "/dev/nvidiactl", "/dev/random", "/dev/shm", "/dev/urandom", "/dev/zero",
    ]  # fmt: skip
    for dev in gpu_device_files((0, 2)):
        assert rules[dev].access == READ_FILE | WRITE_FILE | IOCTL_DEV
        assert not rules[dev].is_dir
    assert rules["/dev/shm"].is_dir and rules["/dev/shm"].access & WRITE_FILE
    assert "/dev/nvidia1" not in rules
    assert not any(r.access & EXECUTE for r in rules.values())


def test_gpu_rules_under_an_abi_without_ioctl_control_keep_read_write() -> None:
    rules = by_path(FsPlan(work_dir="/w", runtime_dirs=(), gpus=(0,)), 4)
    assert rules["/dev/nvidia0"].access == READ_FILE | WRITE_FILE  # ioctls are not restricted below ABI 5
    assert rules["/dev/nvidiactl"].access == READ_FILE | WRITE_FILE


def test_abi_zero_handles_nothing() -> None:
    assert landlock_rules(PLAN, 0).handled_fs == 0
    assert landlock_rules(PLAN, 0).rules == ()
