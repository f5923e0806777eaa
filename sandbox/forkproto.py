"""The fork server's control protocol (``sandbox.forkserver`` <-> ``sandbox.spawner``); pure.

One JSON object per ``SOCK_SEQPACKET`` message (at most ``MAX_MESSAGE`` bytes); descriptors
travel beside it (``SCM_RIGHTS``):

    gateway -> server  spawn {id, argv, env, cwd, stderr}   + [channel, stderr log if stderr]
    server -> gateway  ready {pid}                           imports done, serving requests
                       spawned {id, pid}                     + [pidfd of the child, if any]
                       failed {id, message}                  the fork did not happen
                       exited {pid, returncode}              a child was reaped

``returncode`` reads like ``Popen.returncode``: the exit status, or ``-N`` for signal ``N``.
A forked worker finds its channel at descriptor ``CHANNEL_FD`` (its ``--fd``).
"""

from __future__ import annotations

import array
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ForkServerError

MAX_MESSAGE = 256 * 1024
MAX_FDS = 2  # the channel and the stderr log
CHANNEL_FD = 3
_FD_SIZE = array.array("i").itemsize


@dataclass(frozen=True)
class SpawnRequest:
    id: int
    argv: tuple[str, ...]  # the ``sandbox.worker`` arguments
    env: Mapping[str, str]  # the worker's whole environment
    cwd: str
    stderr: bool  # a second descriptor (the log) comes with it; else stderr goes to /dev/null

    def encode(self) -> bytes:
        body = {"op": "spawn", "id": self.id, "argv": list(self.argv), "env": dict(self.env)}
        return _encode({**body, "cwd": self.cwd, "stderr": self.stderr})

    @classmethod
    def decode(cls, data: bytes) -> SpawnRequest:
        obj = _decode(data)
        if obj.get("op") != "spawn":
            raise ForkServerError(f"expected a spawn request, got {obj.get('op')!r}")
        argv, env, cwd = obj.get("argv"), obj.get("env"), obj.get("cwd")
        if not isinstance(argv, list) or not all(_text(arg) for arg in argv):
            raise ForkServerError("spawn request: argv must be a list of strings")
        if not isinstance(env, dict) or not all(
            _text(k) and "=" not in k and _text(v) for k, v in env.items()
        ):
            raise ForkServerError("spawn request: env must map variable names to strings")
        if not _text(cwd) or not cwd or not isinstance(obj.get("stderr"), bool):
            raise ForkServerError("spawn request: cwd must be a path and stderr a boolean")
        return cls(_int(obj, "id"), tuple(argv), dict(env), cwd, obj["stderr"])


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class Spawned:
    id: int
    pid: int


@dataclass(frozen=True)
class Failed:
    id: int
    message: str


@dataclass(frozen=True)
class Exited:
    pid: int
    returncode: int


ServerMessage = Ready | Spawned | Failed | Exited


def encode_reply(message: ServerMessage) -> bytes:
    if isinstance(message, Ready):
        return _encode({"op": "ready", "pid": message.pid})
    if isinstance(message, Spawned):
        return _encode({"op": "spawned", "id": message.id, "pid": message.pid})
    if isinstance(message, Failed):
        return _encode({"op": "failed", "id": message.id, "message": message.message[:4000]})
    return _encode({"op": "exited", "pid": message.pid, "returncode": message.returncode})


def decode_reply(data: bytes) -> ServerMessage:
    obj = _decode(data)
    op = obj.get("op")
    if op == "ready":
        return Ready(_int(obj, "pid"))
    if op == "spawned":
        return Spawned(_int(obj, "id"), _int(obj, "pid"))
    if op == "failed":
        message = obj.get("message")
        return Failed(_int(obj, "id"), message if isinstance(message, str) else "no reason given")
    if op == "exited":
        return Exited(_int(obj, "pid"), _int(obj, "returncode", low=-(2**31)))
    raise ForkServerError(f"unexpected fork server message {op!r}")


def _encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ForkServerError(f"fork server message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def _decode(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ForkServerError(f"malformed fork server message: {exc}") from exc
    if not isinstance(obj, dict):
        raise ForkServerError("malformed fork server message: not a JSON object")
    return obj


def _int(obj: Mapping[str, Any], key: str, *, low: int = 0) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value < 2**31:
        raise ForkServerError(f"fork server message: {key} must be an integer")
    return value


def _text(value: object) -> bool:
    return isinstance(value, str) and "\x00" not in value


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors in ``recvmsg`` ancillary data (``SCM_RIGHTS``)."""
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % _FD_SIZE]))
    return fds


def peek_id(data: bytes) -> int:
    """The id of a request that failed to decode, if it has a usable one (else 0)."""
    try:
        return _int(_decode(data), "id")
    except ForkServerError:
        return 0
