"""The per-layer report, strict mode's verdict, and the settings sent to a worker."""

from __future__ import annotations

import json

import pytest

from sandbox.isolation import LAYERS, IsolationReport, LayerReport, SandboxSettings, describe_missing
from sandbox.worker import strict_refusal


def report(**status: str) -> IsolationReport:
    return IsolationReport(
        tuple(LayerReport(n, status.get(n, "applied"), True, f"{n} detail") for n in LAYERS),  # type: ignore[arg-type]
        notes=("a note",),
    )


def test_round_trips_through_json_and_keeps_the_old_fields() -> None:
    r = report(cgroup="unavailable", uid="not_needed")
    again = IsolationReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
    assert again.env_scrubbed and again.fds_closed and again.no_new_privs and again.core_dumps_disabled
    assert r.to_dict()["layers"][2] == {
        "name": "cgroup", "status": "unavailable", "supported": True, "applied": False, "detail": "cgroup detail",
    }  # fmt: skip


def test_malformed_reports_never_read_as_applied() -> None:
    r = IsolationReport.from_dict({"layers": [{"name": "seccomp", "status": "yes"}, "junk"], "notes": "x"})
    assert r.layers == (LayerReport("seccomp", "failed", False, ""),)
    assert r.notes == ()
    assert {layer.name for layer in r.missing()} == set(LAYERS)  # unreported layers count as missing


def test_missing_skips_unneeded_and_optional_layers() -> None:
    r = report(cgroup="unavailable", uid="not_needed", seccomp="failed")
    assert [layer.name for layer in r.missing()] == ["cgroup", "seccomp"]
    assert [layer.name for layer in r.missing(optional=["cgroup"])] == ["seccomp"]
    assert (
        describe_missing(r.missing())
        == "cgroup (unavailable: cgroup detail); seccomp (failed: seccomp detail)"
    )


def test_strict_mode_refuses_naming_the_layer() -> None:
    r = report(filesystem="unavailable")
    assert strict_refusal(r, SandboxSettings()) is None  # not strict: the client warns instead
    refusal = strict_refusal(r, SandboxSettings(strict=True))
    assert refusal is not None
    assert "filesystem (unavailable: filesystem detail)" in refusal
    assert strict_refusal(r, SandboxSettings(strict=True, optional=("filesystem",))) is None
    assert strict_refusal(report(), SandboxSettings(strict=True)) is None


def test_settings_round_trip_and_refuse_nonsense() -> None:
    s = SandboxSettings(strict=True, optional=("cgroup",), memory_limit_bytes=2**30, gpus=(0, 3), uid=1234)
    assert SandboxSettings.from_json(s.to_json()) == s
    with pytest.raises(ValueError, match="unknown isolation layer"):
        SandboxSettings(optional=("firewall",))
    with pytest.raises(ValueError, match="64 MiB"):
        SandboxSettings(memory_limit_bytes=1000)
    with pytest.raises(ValueError, match="unknown sandbox setting"):
        SandboxSettings.from_json('{"strictly": true}')


def test_skipped_layers_travel_as_json_and_unknown_ones_are_refused() -> None:
    settings = SandboxSettings(unsafe_skip_layers=("filesystem", "seccomp"))
    assert SandboxSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="cannot skip layer"):
        SandboxSettings(unsafe_skip_layers=("environment",))
