"""The fork server's control messages: round trips, and refusal of anything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ForkServerError
from sandbox.forkproto import (
    MAX_MESSAGE,
    Exited,
    Failed,
    Ready,
    Spawned,
    SpawnRequest,
    decode_reply,
    encode_reply,
    peek_id,
)

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
names = text.filter(lambda s: "=" not in s)


@given(
    wire_id=st.integers(1, 2**31 - 1),
    argv=st.lists(text, max_size=8),
    env=st.dictionaries(names, text, max_size=8),
    cwd=text.filter(bool),
    stderr=st.booleans(),
)
def test_a_spawn_request_round_trips(
    wire_id: int, argv: list[str], env: dict[str, str], cwd: str, stderr: bool
) -> None:
    request = SpawnRequest(wire_id, tuple(argv), env, cwd, stderr)
    assert SpawnRequest.decode(request.encode()) == request


@pytest.mark.parametrize(
    "message", [Ready(12), Spawned(3, 4567), Failed(0, "no"), Exited(4567, 0), Exited(4567, -9)]
)
def test_server_messages_round_trip(message: Ready | Spawned | Failed | Exited) -> None:
    assert decode_reply(encode_reply(message)) == message


GOOD = {"op": "spawn", "id": 1, "argv": ["--fd", "3"], "env": {"A": "b"}, "cwd": "/tmp/w", "stderr": False}


@pytest.mark.parametrize(
    "change",
    [
        {"op": "spawned"},
        {"id": -1},
        {"id": "1"},
        {"id": True},
        {"argv": "--fd 3"},
        {"argv": ["a\x00b"]},
        {"env": {"A=B": "c"}},
        {"env": {"A": 1}},
        {"env": ["A", "b"]},
        {"cwd": ""},
        {"cwd": None},
        {"stderr": 1},
    ],
)
def test_malformed_spawn_requests_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ForkServerError):
        SpawnRequest.decode(json.dumps({**GOOD, **change}).encode())


@pytest.mark.parametrize("data", [b"", b"\xff", b"[1]", b'{"op": "exited", "pid": 1}', b'{"op": "what"}'])
def test_malformed_replies_are_refused(data: bytes) -> None:
    with pytest.raises(ForkServerError):
        decode_reply(data)


def test_oversized_messages_are_refused_before_sending() -> None:
    with pytest.raises(ForkServerError, match="exceeds"):
        SpawnRequest(1, ("x" * MAX_MESSAGE,), {}, "/tmp", False).encode()


def test_the_id_of_a_refused_request_is_kept_when_readable() -> None:
    assert peek_id(json.dumps({**GOOD, "id": 7, "argv": 3}).encode()) == 7
    assert peek_id(b"garbage") == 0
