"""Host support, decided from facts (made up here) and probed for real."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox.isolation.probe import HostFacts, probe_host, support_from
from sandbox.isolation.report import LAYERS

FULL = HostFacts(
    linux=True, euid=0, landlock_abi=7, landlock_reason=None, libseccomp=True, libseccomp_reason=None,
    userns=True, cgroup_reason=None,
)  # fmt: skip


def verdicts(facts: HostFacts) -> dict[str, tuple[bool, str]]:
    return {s.layer: (s.supported, s.detail) for s in support_from(facts)}


def test_a_full_host_supports_every_layer() -> None:
    got = verdicts(FULL)
    assert list(got) == list(LAYERS)
    assert all(ok for ok, _ in got.values())
    assert got["filesystem"][1] == "Landlock ABI 7"


def test_without_root_the_network_comes_from_a_user_namespace_or_seccomp() -> None:
    user = replace(FULL, euid=1000)
    assert "user namespace" in verdicts(user)["network"][1]
    no_userns = replace(user, userns=False)
    assert verdicts(no_userns)["network"] == (
        True,
        "no namespaces for this user: seccomp refuses non-Unix sockets",
    )
    nothing = replace(no_userns, libseccomp=False, libseccomp_reason="no lib")
    assert verdicts(nothing)["network"][0] is False
    assert verdicts(nothing)["seccomp"] == (False, "no lib")
    assert verdicts(user)["uid"] == (True, "not root: nothing to drop")


def test_missing_kernel_features_are_named() -> None:
    old = replace(
        FULL, landlock_abi=0, landlock_reason="the kernel has no Landlock", cgroup_reason="cgroup v1"
    )
    got = verdicts(old)
    assert got["filesystem"] == (False, "the kernel has no Landlock")
    assert got["cgroup"] == (False, "cgroup v1")


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_probing_this_host_changes_nothing() -> None:
    before = Path("/proc/self/status").read_text()
    facts = probe_host()
    assert facts.euid == os.geteuid()
    assert facts.landlock_abi >= 0
    assert (facts.landlock_abi > 0) == (facts.landlock_reason is None)
    after = Path("/proc/self/status").read_text()
    for field in ("NoNewPrivs", "Seccomp", "Uid"):
        assert [ln for ln in before.splitlines() if ln.startswith(field)] == [
            ln for ln in after.splitlines() if ln.startswith(field)
        ]
