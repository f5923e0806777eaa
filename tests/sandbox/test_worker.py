"""The worker process driven directly over its socket, without the gateway client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.isolation import build_worker_env
from sandbox.protocol import recv_frames, send_frame

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def spawn(model_dir: Path, work_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with child:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.worker",
                "--fd",
                str(child.fileno()),
                "--model-dir",
                str(model_dir),
                "--name",
                "probe",
                *extra,
            ],
            env=build_worker_env(work_dir, pythonpath=str(PROJECT_ROOT)),
            cwd=work_dir,
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    return proc, parent


def generate_frame(wire_id: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    params = {"max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": None}
    return {"type": "generate", "id": wire_id, "messages": None, "prompt": prompt, "params": params}


def until_terminal(frames: Iterator[dict[str, Any]], wire_id: str) -> list[dict[str, Any]]:
    got = []
    for frame in frames:
        if frame.get("id") == wire_id:
            got.append(frame)
            if frame["type"] in ("done", "error"):
                return got
    raise AssertionError(f"channel closed before {wire_id} finished")


def test_pickle_weights_get_a_fatal_frame_and_a_failed_exit(demo_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "pytorch_model.bin").write_bytes(b"")
    proc, sock = spawn(model_dir, tmp_path)
    with sock:
        frames = list(recv_frames(sock))
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert [f["type"] for f in frames] == ["fatal"]
    assert "pytorch_model.bin" in frames[0]["message"]
    assert "only safetensors" in frames[0]["message"]
    assert b"model load failed" in stderr


def test_serves_cancels_refuses_and_exits_when_the_gateway_goes(demo_model_dir: Path, tmp_path: Path) -> None:
    secret_prompt = "PROMPT-MARKER-7f3a never log me"
    proc, sock = spawn(demo_model_dir, tmp_path, "--max-batch", "1")  # one at a time: "queued" waits
    try:
        frames = recv_frames(sock)
        ready = next(frames)
        assert ready["type"] == "ready"
        assert (ready["model"], ready["context_length"], ready["pid"]) == ("probe", 2048, proc.pid)
        layers = {layer["name"]: layer for layer in ready["isolation"]["layers"]}
        assert layers["no_new_privs"]["applied"] is True
        assert layers["filesystem"]["applied"] is True  # the model still loads under Landlock

        bad = generate_frame("bad", secret_prompt, 5)
        bad["params"]["max_tokens"] = 0
        send_frame(sock, bad)
        assert until_terminal(frames, "bad")[-1]["code"] == "invalid_request"

        send_frame(sock, generate_frame("long", secret_prompt, 1500))
        send_frame(sock, generate_frame("queued", secret_prompt, 5))
        first = next(frames)
        assert (first["id"], first["type"]) == ("long", "token")
        send_frame(sock, {"type": "cancel", "id": "queued"})
        send_frame(sock, {"type": "cancel", "id": "long"})
        long_frames = until_terminal(frames, "long")
        assert long_frames[-1]["code"] == "cancelled"
        assert len(long_frames) < 1000
        assert until_terminal(frames, "queued") == [
            {"type": "error", "id": "queued", "code": "cancelled", "message": "request cancelled"}
        ]

        send_frame(sock, generate_frame("short", secret_prompt, 4))
        done = until_terminal(frames, "short")[-1]
        assert (done["type"], done["finish_reason"], done["completion_tokens"]) == ("done", "length", 4)
    finally:
        sock.close()  # the gateway goes away: the worker must exit on its own
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"channel closed by the gateway" in stderr
    assert b"PROMPT-MARKER" not in stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], b"required"),
        (["--fd", "x", "--model-dir", ".", "--name", "n"], b"--fd"),
        (["--fd", "3", "--name", "n"], b"--model-dir is required with --kind transformers"),
        (["--fd", "3", "--name", "n", "--kind", "echo", "--model-dir", "."], b"not used with --kind echo"),
        (["--fd", "3", "--name", "n", "--kind", "gpt"], b"--kind"),
        (["--fd", "3", "--name", "n", "--kind", "echo", "--max-batch", "0"], b"max_batch must be at least 1"),
        (["--fd", "3", "--name", "n", "--kind", "echo", "--batch-window-ms", "-1"], b"batch window"),
    ],
)
def test_bad_arguments_exit_with_usage(argv: list[str], says: bytes) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sandbox.worker", *argv], capture_output=True, timeout=30, cwd=PROJECT_ROOT
    )
    assert out.returncode == 2
    assert b"usage:" in out.stderr
    assert says in out.stderr
