"""A real worker process batching concurrent requests (driven over its socket)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.types import DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.model import LoadedModel, generate, load_model
from sandbox.protocol import recv_frames, send_frame
from tests.sandbox.test_worker import generate_frame, spawn

Frames = Iterator[dict[str, Any]]


@pytest.fixture(scope="module")
def channel(
    demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[socket.socket, Frames]]:
    proc, sock = spawn(demo_model_dir, tmp_path_factory.mktemp("batch-worker"), "--max-batch", "8")
    frames = recv_frames(sock)
    assert next(frames)["type"] == "ready"
    yield sock, frames
    sock.close()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"batching up to 8 requests" in stderr


@pytest.fixture(scope="module")
def loaded(demo_model_dir: Path) -> LoadedModel:
    return load_model(demo_model_dir)


def alone(loaded: LoadedModel, prompt: str, max_tokens: int) -> tuple[str, DoneEvent]:
    request = GenerateRequest(
        id="t", params=GenerationParams(max_tokens=max_tokens, temperature=0.0), prompt=prompt
    )
    events = list(generate(loaded, request, lambda: False))
    assert isinstance(events[-1], DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent)), events[-1]


def until_all_terminal(frames: Frames, ids: set[str]) -> list[dict[str, Any]]:
    """Every frame of ``ids``, in arrival order, until each has its terminal frame."""
    got, open_ids = [], set(ids)
    for frame in frames:
        assert frame.get("id") in ids, frame
        got.append(frame)
        if frame["type"] in ("done", "error"):
            open_ids.discard(frame["id"])
            if not open_ids:
                return got
    raise AssertionError("channel closed early")


def text_of(frames: list[dict[str, Any]], wire_id: str) -> str:
    return "".join(f["text"] for f in frames if f["id"] == wire_id and f["type"] == "token")


def terminal(frames: list[dict[str, Any]], wire_id: str) -> dict[str, Any]:
    (last,) = [f for f in frames if f["id"] == wire_id and f["type"] in ("done", "error")]
    assert frames.index(last) == max(i for i, f in enumerate(frames) if f["id"] == wire_id)
    return last


def test_concurrent_requests_stream_their_own_tokens_and_done(
    channel: tuple[socket.socket, Frames], loaded: LoadedModel
) -> None:
    sock, frames = channel
    cases = {
        "a": ("Hi", 12),
        "b": ("The quick brown fox jumps", 20),
        "c": ("x", 16),
        "d": ("Hello world, " * 5, 9),
    }
    for wire_id, (prompt, max_tokens) in cases.items():
        send_frame(sock, generate_frame(wire_id, prompt, max_tokens))
    got = until_all_terminal(frames, set(cases))
    for wire_id, (prompt, max_tokens) in cases.items():
        text, done = alone(loaded, prompt, max_tokens)
        assert text_of(got, wire_id) == text
        assert terminal(got, wire_id) == {
            "type": "done",
            "id": wire_id,
            "finish_reason": "length",
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": max_tokens,
        }
    # batched, not one after the other: "b" streamed before "a" was done
    first_b = next(i for i, f in enumerate(got) if f["id"] == "b")
    assert first_b < got.index(terminal(got, "a"))


def test_cancelling_one_request_leaves_the_others(
    channel: tuple[socket.socket, Frames], loaded: LoadedModel
) -> None:
    sock, frames = channel
    for wire_id in ("keep1", "gone", "keep2"):
        send_frame(sock, generate_frame(wire_id, f"prompt {wire_id}", 60))
    got = []
    for frame in frames:
        got.append(frame)
        if frame["id"] == "gone":
            send_frame(sock, {"type": "cancel", "id": "gone"})
            break
    got += until_all_terminal(frames, {"keep1", "gone", "keep2"})
    assert terminal(got, "gone") == {
        "type": "error",
        "id": "gone",
        "code": "cancelled",
        "message": "request cancelled",
    }
    for wire_id in ("keep1", "keep2"):
        text, _ = alone(loaded, f"prompt {wire_id}", 60)
        assert text_of(got, wire_id) == text
        assert terminal(got, wire_id)["completion_tokens"] == 60


def test_a_refused_request_does_not_affect_the_batch(
    channel: tuple[socket.socket, Frames], loaded: LoadedModel
) -> None:
    sock, frames = channel
    send_frame(sock, generate_frame("first", "Hello", 25))
    send_frame(sock, generate_frame("too-long", "Hello", 2048))
    bad = generate_frame("malformed", "Hello", 5)
    bad["params"]["top_p"] = 0
    send_frame(sock, bad)
    send_frame(sock, generate_frame("second", "world", 25))
    got = until_all_terminal(frames, {"first", "too-long", "malformed", "second"})
    assert terminal(got, "too-long")["code"] == "context_length_exceeded"
    assert terminal(got, "malformed")["code"] == "invalid_request"
    assert [f["type"] for f in got if f["id"] in ("too-long", "malformed")] == ["error", "error"]
    for wire_id, prompt in (("first", "Hello"), ("second", "world")):
        assert text_of(got, wire_id) == alone(loaded, prompt, 25)[0]
        assert terminal(got, wire_id)["type"] == "done"


def test_more_requests_than_the_batch_holds_all_finish(channel: tuple[socket.socket, Frames]) -> None:
    sock, frames = channel
    ids = {f"r{i}" for i in range(12)}  # max batch 8: four wait for rows to free up
    for wire_id in sorted(ids):
        send_frame(sock, generate_frame(wire_id, wire_id, 5 + int(wire_id[1:])))
    got = until_all_terminal(frames, ids)
    for wire_id in ids:
        assert terminal(got, wire_id)["completion_tokens"] == 5 + int(wire_id[1:])


def test_one_at_a_time_when_max_batch_is_one(demo_model_dir: Path, tmp_path: Path) -> None:
    proc, sock = spawn(demo_model_dir, tmp_path, "--max-batch", "1")
    try:
        frames = recv_frames(sock)
        assert next(frames)["type"] == "ready"
        for wire_id in ("a", "b"):
            send_frame(sock, generate_frame(wire_id, "Hi", 6))
        got = until_all_terminal(frames, {"a", "b"})
        order = [f["id"] for f in got]
        assert order == sorted(order)  # all of "a", then all of "b"
    finally:
        sock.close()
    _, stderr = proc.communicate(timeout=30)
    assert b"serving one request at a time" in stderr
    assert proc.returncode == 0
