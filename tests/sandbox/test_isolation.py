from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.isolation import ALLOWED_ENV_KEYS, IsolationReport, build_worker_env

PROBE = """
import json, os, sys
from sandbox.isolation import apply_isolation
report = apply_isolation(int(sys.argv[1]))
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
listed = [int(n) for n in os.listdir('/proc/self/fd')]
stray_open = [fd for fd in listed if fd > 2 and fd != int(sys.argv[1]) and is_open(fd)]
status = open('/proc/self/status').read()
no_new_privs = [l for l in status.splitlines() if l.startswith('NoNewPrivs:')][0].split()[1]
import resource
print(json.dumps({"report": report.to_dict(), "core": resource.getrlimit(resource.RLIMIT_CORE),
                  "no_new_privs": no_new_privs, "remaining_fds": len(stray_open)}))
"""


def run_probe(env: dict[str, str], extra_fd: int | None = None) -> dict[str, object]:
    read_end, write_end = os.pipe()
    try:
        fds = (read_end,) if extra_fd is None else (read_end, extra_fd)
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(read_end)],
            env=env,
            pass_fds=fds,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    return dict(json.loads(out.stdout))


def test_worker_env_is_built_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOS_TEST_SECRET", "s3cr3t-value")
    env = build_worker_env(tmp_path, threads=2, pythonpath="/opt/llmos")
    assert set(env) <= ALLOWED_ENV_KEYS
    assert "s3cr3t-value" not in env.values()
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["PYTHONPATH"] == "/opt/llmos"
    assert "OMP_NUM_THREADS" not in build_worker_env(tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def project_env(tmp_path: Path) -> dict[str, str]:
    return build_worker_env(tmp_path, pythonpath=str(Path(__file__).resolve().parents[2]))


@pytest.mark.skipif(sys.platform != "linux", reason="prctl and /proc are Linux only")
def test_isolation_applies_and_reports_in_a_child(tmp_path: Path) -> None:
    stray = os.open(os.devnull, os.O_RDONLY)
    try:
        result = run_probe(project_env(tmp_path), extra_fd=stray)
    finally:
        os.close(stray)
    report = IsolationReport.from_dict(result["report"])  # type: ignore[arg-type]
    assert report.env_scrubbed and report.fds_closed and report.no_new_privs and report.core_dumps_disabled
    descriptors = report.layer("descriptors")
    assert descriptors is not None and "closed 1 inherited" in descriptors.detail
    assert result["remaining_fds"] == 0
    assert result["no_new_privs"] == "1"
    assert result["core"] == [0, 0]


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux only")
def test_an_unexpected_variable_is_reported_without_its_name(tmp_path: Path) -> None:
    env = project_env(tmp_path) | {"LLMOS_TEST_SECRET": "s3cr3t-value"}
    report = IsolationReport.from_dict(run_probe(env)["report"])  # type: ignore[arg-type]
    assert not report.env_scrubbed
    assert "1 unexpected variable" in str(report.to_dict())
    assert "LLMOS_TEST_SECRET" not in str(report.to_dict())


def test_gpus_set_cuda_visible_devices(tmp_path: Path) -> None:
    assert build_worker_env(tmp_path, gpus=(3, 1))["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert build_worker_env(tmp_path)["CUDA_VISIBLE_DEVICES"] == ""  # no GPU unless assigned
    assert build_worker_env(tmp_path, gpus=(0,))["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # placement's numbering
