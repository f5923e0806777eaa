"""A hostile model next to a healthy one in a real `llmos serve` (issue 7, items 4 and 5).

Someone plants a malicious pickle in a served model's directory and the worker restarts: it
refuses the directory (``unsafe_weights``) without unpickling anything, the model's requests get
503, and the other model keeps answering the official openai client before, during and after.
Payload attacks (network, files, exec, fork bombs, memory) are in tests/sandbox/hostile/.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from sandbox.demo_model import build_demo_model
from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e


class Evil:
    """Unpickling this creates ``marker``: a harmless stand-in for a malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Path]]:
    root = tmp_path_factory.mktemp("hostile")
    model_dir = root / "target-model"
    build_demo_model(model_dir, seed=0)
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "workers: {restart_backoff_initial_s: 0.2, restart_backoff_max_s: 1.0}\n"
        # Without signed manifests, so that the worker's own check is what refuses the pickle
        # (with them, the gateway refuses the unlisted file first: tests/e2e/test_signed_models.py).
        "model_trust: {unsafe_allow_unsigned: true}\n"
        "models:\n"
        f"  - {{name: target, path: {model_dir}, threads: 1}}\n"
        "  - {name: echo, kind: echo}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw, model_dir


def worker_pid(model: str, model_dir: Path) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sandbox.worker" in cmd and model.encode() in cmd and str(model_dir).encode() in cmd:
            return int(entry.name)
    raise AssertionError(f"no worker for {model} ({model_dir})")


def workers(gateway: Gateway) -> dict[str, Any]:
    with gateway.http() as http:
        r = http.get("/admin/workers", headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()["workers"]
        return result


def echo(gateway: Gateway, text: str) -> str:
    resp = gateway.client().chat.completions.create(
        model="echo", messages=[{"role": "user", "content": text}], max_tokens=32
    )
    return resp.choices[0].message.content or ""


def test_a_planted_pickle_is_refused_and_the_other_model_keeps_serving(
    two_models: tuple[Gateway, Path],
) -> None:
    gateway, model_dir = two_models
    assert echo(gateway, "before") == "before"
    marker = Path(tempfile.mkdtemp(prefix="llmos-e2e-pickle-")) / "unpickled"
    marker.parent.chmod(0o1777)  # the worker's uid could create it: only never unpickling stops it
    planted = model_dir / "pytorch_model.bin"
    try:
        planted.write_bytes(pickle.dumps(Evil(str(marker)), protocol=2))
        os.kill(worker_pid("target", model_dir), signal.SIGKILL)  # its next start reads the dir
        answers = 0
        deadline = time.monotonic() + 60
        while "unsafe_weights" not in str(workers(gateway)["target"].get("last_error")):
            assert time.monotonic() < deadline, workers(gateway)
            assert echo(gateway, f"during {answers}") == f"during {answers}"
            answers += 1
        state = workers(gateway)["target"]
        assert "pytorch_model.bin" in state["last_error"] and state["state"] != "ready"
        with pytest.raises(openai.APIStatusError) as err:
            gateway.client().chat.completions.create(
                model="target", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert err.value.status_code == 503
        assert echo(gateway, "still here") == "still here"
        assert not marker.exists()
    finally:
        planted.unlink(missing_ok=True)
        shutil.rmtree(marker.parent, ignore_errors=True)
    gateway.wait_ready(timeout=120)  # the directory is clean again: the next restart loads it
    assert workers(gateway)["target"]["state"] == "ready"
    assert echo(gateway, "after") == "after"
