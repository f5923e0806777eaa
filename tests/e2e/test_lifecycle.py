"""`llmos serve --config FILE`: a configured model name, a clean shutdown that leaves no worker
behind, and refusals to start on a bad configuration or a failing policy."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import LLMOS, Gateway, free_port

pytestmark = pytest.mark.e2e


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen([LLMOS, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=err)


def test_configured_server_serves_and_shuts_down_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\nmodels:\n  - name: tiny\n    path: state/models/demo\n    threads: 1\n"
    )
    log = tmp_path / "server.log"
    proc = _serve(config, log)
    assert proc.stdout is not None
    key = proc.stdout.readline().decode().strip()
    gw = Gateway(
        home=tmp_path / "state", base_url=f"http://127.0.0.1:{port}", admin_key=key, proc=proc, log_path=log
    )
    try:
        gw.wait_ready()
        assert [m.id for m in gw.client().models.list().data] == ["tiny"]
        with pytest.raises(openai.NotFoundError):
            gw.client().chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
        assert len(gw.worker_pids()) == 1
    finally:
        gw.close_clients()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        rest = proc.stdout.read()
        proc.stdout.close()
    assert rest == b"", "stdout carries the admin key alone; logs go to stderr"
    # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM.
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in log.read_text()
    assert gw.worker_pids() == []
    assert (tmp_path / "state" / "audit.db").exists()
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"


def test_a_bad_config_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "llmos.yaml"
    config.write_text("server:\n  port: seventy\n")
    out = subprocess.run(
        [LLMOS, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert f"{config}: server.port:" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_failing_policy_test_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "LLMOS_HOME": str(tmp_path / "home")}
    config = tmp_path / "llmos.yaml"
    config.write_text(f"state_dir: home\nserver: {{port: {free_port()}}}\nmodels: []\n")
    subprocess.run(
        [LLMOS, "init", "--config", str(config)], env=env, capture_output=True, check=True, timeout=60
    )
    tests = tmp_path / "home" / "policies" / "authz_test.rego"
    tests.write_text(tests.read_text() + "\ntest_always_fails if {\n\t1 == 2\n}\n")
    out = subprocess.run(
        [LLMOS, "serve", "--config", str(config)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "authz_test.rego:test_always_fails" in out.stderr


def test_a_policy_that_does_not_compile_refuses_to_start_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "llmos.yaml"
    config.write_text(f"state_dir: home\nserver: {{port: {free_port()}}}\nmodels: []\n")
    subprocess.run([LLMOS, "init", "--config", str(config)], capture_output=True, check=True, timeout=60)
    (tmp_path / "home" / "policies" / "broken.rego").write_text(
        "package llmos.authz\n\nimport rego.v1\n\ndeny contains x if {\n\tx := \n}\n"
    )
    out = subprocess.run(
        [LLMOS, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert "broken.rego:" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""  # compile errors are not printed on stdout
