"""The model worker process: ``python -m sandbox.worker --fd N --model-dir DIR --name NAME``.

It applies isolation, loads the model, sends ``ready`` and then serves generate requests one at
a time over the inherited socket. A reader thread takes frames off the channel (generate ->
queue, cancel -> flag); the main thread generates and writes frames under a lock. It exits on
``shutdown`` or when the channel closes (the gateway is gone). Logs go to stderr and never
contain prompt or completion text.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import WorkerError, WorkerRequestError
from gateway.types import DoneEvent, GenerateRequest
from sandbox.isolation import apply_isolation
from sandbox.modeldir import check_model_dir
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    error_frame,
    event_to_frame,
    recv_frames,
    request_from_frame,
)

if TYPE_CHECKING:
    from sandbox.model import LoadedModel

log = logging.getLogger("llmos.sandbox.worker")

_SHUTDOWN = None


class Channel:
    """The worker's end of the socket: thread-safe frame writes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()

    def send(self, frame: Frame) -> None:
        data = encode_frame(frame)
        with self._lock:
            self.sock.sendall(data)


class Inbox:
    """Requests waiting to run, and the ids the gateway has cancelled."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, Frame] | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self.closing = threading.Event()

    def cancel(self, wire_id: str) -> None:
        with self._lock:
            self._cancelled.add(wire_id)

    def is_cancelled(self, wire_id: str) -> bool:
        with self._lock:
            return self.closing.is_set() or wire_id in self._cancelled

    def forget(self, wire_id: str) -> None:
        with self._lock:
            self._cancelled.discard(wire_id)


def read_loop(channel: Channel, inbox: Inbox) -> None:
    """Reader thread: route incoming frames until shutdown or EOF."""
    try:
        for frame in recv_frames(channel.sock):
            kind = frame.get("type")
            wire_id = frame.get("id")
            if kind == "generate" and isinstance(wire_id, str):
                inbox.queue.put((wire_id, frame))
            elif kind == "cancel" and isinstance(wire_id, str):
                inbox.cancel(wire_id)
            elif kind == "shutdown":
                log.info("shutdown requested")
                break
            else:
                log.warning("ignoring unexpected %r frame", kind)
        else:
            log.info("channel closed by the gateway")
    except (OSError, ProtocolError) as exc:
        log.error("channel failed: %s", exc)
    finally:
        inbox.closing.set()
        inbox.queue.put(_SHUTDOWN)


def serve_one(channel: Channel, inbox: Inbox, loaded: LoadedModel, wire_id: str, frame: Frame) -> None:
    from sandbox.model import generate

    try:
        request: GenerateRequest = request_from_frame(frame)
    except ProtocolError as exc:
        channel.send(error_frame(wire_id, "invalid_request", str(exc)))
        return
    if inbox.is_cancelled(wire_id):
        channel.send(error_frame(wire_id, "cancelled", "request cancelled"))
        return
    finished = False
    try:
        for event in generate(loaded, request, lambda: inbox.is_cancelled(wire_id)):
            channel.send(event_to_frame(wire_id, event))
            if isinstance(event, DoneEvent):
                finished = True
                log.info(
                    "request %s done: %s, %d prompt + %d completion tokens",
                    wire_id,
                    event.finish_reason,
                    event.prompt_tokens,
                    event.completion_tokens,
                )
    except WorkerRequestError as exc:
        log.info("request %s refused: %s", wire_id, exc.code)
        channel.send(error_frame(wire_id, exc.code, str(exc)))
        return
    except OSError:
        raise  # the channel itself failed: nothing more can be sent
    except Exception as exc:  # the request boundary: any model failure becomes an error frame
        log.exception("request %s failed", wire_id)
        channel.send(error_frame(wire_id, "generation_failed", f"generation failed ({type(exc).__name__})"))
        return
    if not finished:
        log.info("request %s cancelled", wire_id)
        channel.send(error_frame(wire_id, "cancelled", "request cancelled"))


def serve(channel: Channel, loaded: LoadedModel) -> None:
    inbox = Inbox()
    reader = threading.Thread(target=read_loop, args=(channel, inbox), name="channel-reader", daemon=True)
    reader.start()
    while (item := inbox.queue.get()) is not _SHUTDOWN:
        wire_id, frame = item
        try:
            serve_one(channel, inbox, loaded, wire_id, frame)
        except OSError as exc:
            log.error("could not write to the gateway: %s", exc)
            break
        finally:
            inbox.forget(wire_id)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited Unix socket to the gateway")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--name", required=True, help="model name, for the ready frame and logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s worker[{args.name} pid={os.getpid()}] %(levelname)s %(message)s",
    )
    report = apply_isolation(args.fd)
    sock = socket.socket(fileno=args.fd)
    channel = Channel(sock)
    try:
        try:
            check_model_dir(args.model_dir)  # fail fast, before the slow torch import
            from sandbox.model import load_model

            loaded = load_model(args.model_dir)
        except WorkerError as exc:
            log.error("model load failed: %s", exc)
            channel.send({"type": "fatal", "message": str(exc)})
            return 2
        channel.send(
            {
                "type": "ready",
                "model": args.name,
                "context_length": loaded.context_length,
                "pid": os.getpid(),
                "isolation": report.to_dict(),
            }
        )
        log.info("ready (context length %d); isolation %s", loaded.context_length, report.to_dict())
        serve(channel, loaded)
        return 0
    except OSError as exc:
        log.error("channel to the gateway failed: %s", exc)
        return 3
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
