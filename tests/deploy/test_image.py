"""deploy/Dockerfile: what the image promises (non-root, read-only root filesystem, healthcheck,
CPU and CUDA variants, no secrets) checked on the Dockerfile; the package the image installs
(`pip install .`, not editable) carries everything the gateway needs at run time; and, where a
Docker daemon is reachable, the image is built and run read-only."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last:]


def test_multi_stage_with_cpu_and_cuda_variants() -> None:
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert len(stages) >= 2 and any(" AS build" in s for s in stages)
    assert ("ARG", "VARIANT=cpu") in instructions()
    run_lines = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "cpu|cuda" in run_lines  # anything else is refused
    assert "--require-hashes -r requirements-spacy-model.txt" in run_lines
    assert "-c constraints.txt ." in run_lines  # the pinned dependencies, llmos itself not editable


def test_the_image_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    health = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert "LLMOS_HOME=/var/lib/llmos" in env and "TMPDIR=/tmp" in env
    assert ("ENTRYPOINT", '["llmos"]') in stage


def test_no_secret_is_baked_in() -> None:
    secretish = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|PEPPER)[A-Z_]*=", re.IGNORECASE)
    for word, rest in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(rest), rest
        if word == "COPY":
            assert not re.search(r"\.llmos|secrets|\.pem|\.key", rest), rest
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".llmos", ".bench"} <= set(ignored)


def test_the_installed_package_carries_what_the_gateway_needs(tmp_path: Path) -> None:
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run(
        [*wheel_cmd, "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("llmos-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("gateway/cli.py", "sandbox/worker.py", "explain/record.py", "policies/data.json"):
        assert needed in names, needed
    assert any(n.startswith("policies/") and n.endswith(".rego") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llmos = gateway.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.skipif(not docker_works(), reason="no Docker daemon here (the image is built where one runs)")
def test_the_cpu_image_builds_and_serves_read_only(tmp_path: Path) -> None:  # pragma: no cover - needs Docker
    tag = "llmos-test:cpu"
    subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], check=True, timeout=3600)
    name = f"llmos-test-{int(time.time())}"
    run = ["docker", "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    run += ["--security-opt", "no-new-privileges", "-p", "127.0.0.1::8080", tag]
    run += ["serve", "--host", "0.0.0.0", "--no-admin-key"]  # noqa: S104 - inside the container
    subprocess.run(run, check=True, timeout=60)
    try:
        port = (
            subprocess.run(["docker", "port", name, "8080"], capture_output=True, text=True, check=True)
            .stdout.strip()
            .rsplit(":", 1)[1]
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the container never became healthy"
                time.sleep(1)
        user = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True).stdout
        assert user.strip() == "10001"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
