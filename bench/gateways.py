"""The processes under test in bench/proxies.py: the mock upstream, LiteLLM and llmos.

Each gateway is started pinned to the gateway CPU and timed from spawn until it answers its
first authenticated chat request with 200 (its start-up time). llmos is first initialised the
way a deployment is, once per state directory and policy version: ``llmos init --config FILE``
(keys, the policy copied in and, where llmos does so, its Rego tests run and their pass
recorded), timed on its own (``init_s``) and pinned to the same CPU; its processes are not part
of the serve process tree whose memory is measured. Start-up is ``llmos serve`` alone.
LiteLLM runs from its own virtual environment, ``.bench/litellm-venv`` (created with
``litellm[proxy]==1.108.7`` on first use, reused while it holds that version), configured
offline: local model cost map and beta header list, no database, no UI, logging at ERROR, one
uvicorn process.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.overhead import LLMOS, free_port
from bench.procs import MemoryWatch, Processes

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / ".bench" / "litellm-venv"
MODEL = "bench"  # the model name clients ask for, everywhere
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
START_TIMEOUT_S = 120.0
LITELLM_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it downloads the model price list at import
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOG": "ERROR",  # also sets uvicorn's level: no access log lines
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_ADMIN_UI": "True",
    "DISABLE_SCHEMA_UPDATE": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
}


class GatewayError(RuntimeError):
    """A gateway could not be installed, configured or started; the message says why."""


@dataclass
class Target:
    """Something the load generator can be pointed at."""

    name: str
    url: str  # the chat completions URL
    key: str
    workload: str = "chat"  # bench/prompts.py: what the load generator sends it
    startup_s: float | None = None
    init_s: float | None = None  # llmos only: `llmos init` before the start-up is timed
    memory: MemoryWatch | None = None  # also marks a gateway (the mock upstream has none)
    log: Path | None = None
    notes: list[str] = field(default_factory=list)

    def sample_memory(self) -> None:
        if self.memory is not None:
            self.memory.sample()


def start_mock(procs: Processes, key: str, cpus: frozenset[int] | None) -> Target:
    proc = procs.spawn(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", "0", "--api-key", key],
        cpus=cpus,
        pipes=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()  # "listening on 127.0.0.1:PORT"
    if not line.startswith("listening on 127.0.0.1:"):
        raise GatewayError(f"the mock upstream did not start (it said {line!r})")
    return Target("direct", f"http://{line.split()[-1]}/v1/chat/completions", key)


def mock_port(mock: Target) -> int:
    return int(mock.url.split(":")[2].split("/")[0])


def first_answer(target: Target, proc: subprocess.Popen[bytes], started: float) -> float:
    """Seconds from ``started`` until the target answers an authenticated chat request with 200."""
    port = int(target.url.split(":")[2].split("/")[0])
    path = "/" + target.url.split("/", 3)[3]
    log = target.log or Path("/nonexistent")
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]})
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
    last = "no answer yet"
    while time.perf_counter() - started < START_TIMEOUT_S:
        target.sample_memory()
        if proc.poll() is not None:
            raise GatewayError(f"it exited with status {proc.returncode}:\n{tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status == 200:
                return time.perf_counter() - started
            last = f"HTTP {resp.status}: {payload[:300].decode(errors='replace')}"
            if resp.status in (400, 401, 403, 404):  # it runs, but refuses the request: no use waiting
                raise GatewayError(f"it answered {last}")
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise GatewayError(f"no successful answer within {START_TIMEOUT_S:.0f} s (last: {last}):\n{tail(log)}")


def tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- LiteLLM -------------------------------------------------------------------------------


def litellm_python() -> Path:
    """The LiteLLM venv's interpreter, creating or repairing the venv if needed."""
    python = LITELLM_VENV / "bin" / "python"
    if installed_litellm(python) == LITELLM_VERSION:
        return python
    log = LITELLM_VENV.parent / "litellm-install.log"
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV.relative_to(ROOT)}", end="")
    print(f" (about a minute; log: {log.relative_to(ROOT)})", flush=True)
    LITELLM_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    with log.open("w") as out:
        steps = (
            [base, "-m", "venv", "--clear", str(LITELLM_VENV)],
            [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
        )
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=1800).returncode != 0:
                raise GatewayError(f"installing LiteLLM failed ({' '.join(step[:4])} ...):\n{tail(log)}")
    if installed_litellm(python) != LITELLM_VERSION:
        raise GatewayError(f"LiteLLM {LITELLM_VERSION} is not importable after the install:\n{tail(log)}")
    return python


def installed_litellm(python: Path) -> str | None:
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else None


def litellm_env(home: Path) -> dict[str, str]:
    drop = (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "DATABASE_URL",
        "DIRECT_URL",
        "REDIS_HOST",
        "REDIS_URL",
    )
    env = {k: v for k, v in os.environ.items() if k not in drop}  # no database, no cache: one process
    env.update(LITELLM_OFFLINE_ENV)
    env["HOME"] = str(home)  # anything it caches stays in the run's temporary directory
    env["PATH"] = f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}"
    return env


def start_litellm(
    procs: Processes, work: Path, mock: Target, cpus: frozenset[int] | None, master_key: str
) -> Target:
    python = litellm_python()
    home = work / "litellm"
    home.mkdir()
    config = home / "config.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": mock.url.removesuffix("/chat/completions"),
                            "api_key": mock.key,
                        },
                        "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
                    }
                ],
                "general_settings": {"master_key": master_key, "disable_spend_logs": True},
                "litellm_settings": {"set_verbose": False, "telemetry": False},
            },
            indent=1,
        )
    )
    port = free_port()
    log = home / "litellm.log"
    argv = [str(python.with_name("litellm")), "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    started = time.perf_counter()
    # LiteLLM puts its working directory's grandparent on sys.path (proxy_server.py: "../.."):
    # run it two levels below its own directory, or a stray jwt.py in /tmp shadows PyJWT.
    cwd = home / "cwd" / "cwd"
    cwd.mkdir(parents=True)
    proc = procs.spawn(argv, env=litellm_env(home), cpus=cpus, log=log, cwd=cwd)
    target = Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", master_key, log=log)
    target.memory = MemoryWatch(proc.pid)
    try:
        target.startup_s = first_answer(target, proc, started)
    except GatewayError as exc:
        raise GatewayError(f"LiteLLM did not start: {exc}") from exc
    if not has_module(python, "httptools"):
        target.notes.append("its uvicorn parses HTTP with h11 (litellm[proxy] does not install httptools)")
    target.sample_memory()
    return target


def has_module(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], capture_output=True, timeout=60).returncode == 0


# --- llmos ---------------------------------------------------------------------------------


def llmos_config(state: Path, mock: Target, secure: bool, pii_detector: str | None = None) -> str:
    lines = [f"state_dir: {state}", "server: {log_level: warning}"]
    if not secure:
        lines.append("unsafe_disable: [policy, pii, audit]")
    if pii_detector is not None:
        lines.append(f"pii: {{detector: {pii_detector}}}")
    base_url = mock.url.removesuffix("/chat/completions")
    lines += [
        "models:",
        f"  - name: {MODEL}",
        "    kind: upstream",
        "    upstream:",
        f"      base_url: {base_url}",
        f"      model: {MODEL}",
        f"      api_key_env: {UPSTREAM_KEY_ENV}",
        "      timeout_s: 30",
    ]
    return "\n".join(lines) + "\n"


def admin_key(stdout: str) -> str | None:
    """The admin key ``llmos init`` prints on stdout on a first start (the key line, else the
    last line: anything else it may print goes before it)."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("sk-")), lines[-1] if lines else None)


def init_llmos(
    procs: Processes, config: Path, env: dict[str, str], cpus: frozenset[int] | None, log: Path
) -> tuple[str, float]:
    """``llmos init --config FILE`` on a new state directory: (the admin key, seconds it took)."""
    started = time.perf_counter()
    proc = procs.spawn([LLMOS, "init", "--config", str(config)], env=env, cpus=cpus, log=log, pipes=True)
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT_S * 5)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise GatewayError(
            f"`llmos init` did not finish within {START_TIMEOUT_S * 5:.0f} s:\n{tail(log)}"
        ) from None
    seconds = time.perf_counter() - started
    key = admin_key(out.decode(errors="replace"))
    if proc.returncode != 0 or not key:
        raise GatewayError(f"`llmos init` refused the configuration (status {proc.returncode}):\n{tail(log)}")
    return key, seconds


def start_llmos(
    procs: Processes,
    work: Path,
    mock: Target,
    cpus: frozenset[int] | None,
    name: str,
    *,
    secure: bool,
    pii_detector: str | None = None,
) -> Target:
    """``llmos init``, then ``llmos serve`` timed until its first authenticated answer."""
    home = work / name
    home.mkdir()
    config = home / "llmos.yaml"
    config.write_text(llmos_config(home / "state", mock, secure, pii_detector))
    env = {**os.environ, "LLMOS_HOME": str(home / "state"), UPSTREAM_KEY_ENV: mock.key}
    key, init_s = init_llmos(procs, config, env, cpus, home / "init.log")
    port = free_port()
    log = home / "llmos.log"
    started = time.perf_counter()
    proc = procs.spawn(
        [LLMOS, "serve", "--config", str(config), "--port", str(port)], env=env, cpus=cpus, log=log
    )
    target = Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", key, init_s=init_s, log=log)
    target.memory = MemoryWatch(proc.pid)  # the serve process tree only
    try:
        target.startup_s = first_answer(target, proc, started)
    except GatewayError as exc:
        raise GatewayError(f"`llmos serve` did not start ({name}): {exc}") from exc
    target.sample_memory()
    return target
