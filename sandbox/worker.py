"""The model worker process: ``python -m sandbox.worker --fd N --name NAME [--kind KIND]
[--model-dir DIR] [--canaries FILE] [--sandbox JSON] [--unsafe-allow-pickle-weights]
[--max-batch N] [--batch-window-ms MS] [--payload FILE]``.

It reads the canary file (if any), applies isolation (``sandbox.isolation``; in strict mode a
missing layer ends it with a ``fatal`` frame before any model file is read), loads the model
(``sandbox.backend``; pickle-format weights are refused with code ``unsafe_weights`` unless
``--unsafe-allow-pickle-weights``), sends ``ready`` and then serves generate requests over the
inherited socket: batched (``sandbox.batching``: up to ``--max-batch`` requests decode together,
new ones joining the running batch; default 16, the first waiting up to ``--batch-window-ms``
for company when the worker was idle) when the model supports it, else one at a time
(``--max-batch 1``, the echo model, sliding-window models). A request in which a canary value
occurs is refused with ``canary_tripped`` before generation. A reader thread takes frames off
the channel (generate -> queue, cancel -> flag); the main thread generates and writes frames
under a lock. It exits on
``shutdown`` or when the channel closes (the gateway is gone). Logs go to stderr and never
contain prompt or completion text, nor a canary value. A ``fatal`` frame carries a reason
``code`` besides its message.

``--payload FILE`` exists for the hostile-model tests (docs/threat-model.md): the worker reads
the Python file before isolation and runs it right after, in this process, before loading the
model: exactly where malicious model code (a pickle's ``__reduce__``, remote code) would run.
It adds no attack surface: only the gateway chooses a worker's arguments, the gateway's
configuration cannot set it, and code running there is what the sandbox assumes anyway. A
payload that raises ends the worker with ``fatal`` (code ``payload_failed``) and the exception's
text; one that returns lets the worker go on to load its model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType

from gateway.errors import WorkerError, WorkerRequestError
from gateway.types import DoneEvent, GenerateRequest
from sandbox.backend import MODEL_KINDS, Backend, batch_engine, explained_model, load_backend
from sandbox.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_MS, BatchLoop, BatchSettings
from sandbox.canaries import CANARY_TRIPPED, CANARY_TRIPPED_MESSAGE, Canaries, CanaryFileError, load_canaries
from sandbox.explaining import DEFAULT_QUEUE_SIZE, Explainer
from sandbox.isolation import IsolationReport, SandboxSettings, apply_isolation, describe_missing
from sandbox.modeldir import ModelLoadError, check_model_dir
from sandbox.placement import max_memory_from_json
from sandbox.protocol import (
    Frame,
    ProtocolError,
    encode_frame,
    error_frame,
    event_to_frame,
    recv_frames,
    request_from_frame,
)

log = logging.getLogger("llmos.sandbox.worker")

_SHUTDOWN = None
NO_CANARIES = Canaries()


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


def admissible(
    channel: Channel, inbox: Inbox, canaries: Canaries, wire_id: str, frame: Frame
) -> GenerateRequest | None:
    """The request of a generate frame, or None after answering it: malformed, a canary in it,
    or already cancelled."""
    try:
        request: GenerateRequest = request_from_frame(frame)
    except ProtocolError as exc:
        channel.send(error_frame(wire_id, "invalid_request", str(exc)))
        return None
    line = canaries.tripped_by(request)
    if line is not None:  # never log or send the value itself
        log.warning(
            "request %s refused: a canary value reached the worker (canary file line %d)", wire_id, line
        )
        channel.send(error_frame(wire_id, CANARY_TRIPPED, CANARY_TRIPPED_MESSAGE))
        return None
    if inbox.is_cancelled(wire_id):
        channel.send(error_frame(wire_id, "cancelled", "request cancelled"))
        return None
    return request


def serve_one(
    channel: Channel,
    inbox: Inbox,
    model: Backend,
    canaries: Canaries,
    wire_id: str,
    frame: Frame,
    explainer: Explainer | None = None,
) -> None:
    request = admissible(channel, inbox, canaries, wire_id, frame)
    if request is None:
        return
    finished = False
    try:
        for event in model.generate(request, lambda: inbox.is_cancelled(wire_id)):
            channel.send(event_to_frame(wire_id, event))
            if isinstance(event, DoneEvent):
                finished = True
                if explainer is not None:
                    explainer.offer(wire_id, request, event)
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


def serve(
    channel: Channel,
    model: Backend,
    canaries: Canaries = NO_CANARIES,
    batching: BatchSettings | None = None,
    *,
    explain_queue: int = DEFAULT_QUEUE_SIZE,
) -> None:
    """Serve requests until shutdown: batched when ``batching`` allows more than one request and
    the model supports it, else one at a time."""
    settings = batching or BatchSettings()
    inbox = Inbox()
    reader = threading.Thread(target=read_loop, args=(channel, inbox), name="channel-reader", daemon=True)
    reader.start()
    engine = batch_engine(model) if settings.max_batch > 1 else None
    explainer = Explainer(explained_model(model), channel.send, queue_size=explain_queue)
    if engine is not None:
        log.info("batching up to %d requests (window %g ms)", settings.max_batch, settings.window_s * 1000)
        loop = BatchLoop(
            inbox,
            engine,
            settings,
            prepare=lambda wire_id, frame: admissible(channel, inbox, canaries, wire_id, frame),
            send=channel.send,
            explainer=explainer,
        )
        try:
            loop.run()
        except OSError as exc:
            log.error("could not write to the gateway: %s", exc)
        return
    log.info("serving one request at a time")
    while (item := _next_request(inbox, explainer)) is not _SHUTDOWN:
        wire_id, frame = item
        try:
            serve_one(channel, inbox, model, canaries, wire_id, frame, explainer)
        except OSError as exc:
            log.error("could not write to the gateway: %s", exc)
            break
        finally:
            inbox.forget(wire_id)


def _next_request(inbox: Inbox, explainer: Explainer) -> tuple[str, Frame] | None:
    """The next request (None: shut down), explaining answered ones while none is waiting."""
    while explainer.pending():
        try:
            return inbox.queue.get_nowait()
        except queue.Empty:
            explainer.run_one()
    return inbox.queue.get()


def _max_memory(text: str) -> dict[int | str, int]:
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return max_memory_from_json(data)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--max-memory: {exc}") from exc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited Unix socket to the gateway")
    parser.add_argument("--name", required=True, help="model name, for the ready frame and logs")
    parser.add_argument("--kind", choices=MODEL_KINDS, default="transformers", help="what to serve")
    parser.add_argument("--model-dir", type=Path, help="the checkpoint directory (kind transformers only)")
    parser.add_argument("--canaries", type=Path, help="file of values that must never reach the model")
    parser.add_argument(
        "--unsafe-allow-pickle-weights",
        action="store_true",
        help="load pickle-format weights (.bin, .pt, ...) too; they can run code when loaded",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"most requests decoded together (default {DEFAULT_MAX_BATCH}; 1: one at a time)",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=DEFAULT_WINDOW_MS,
        help=f"how long an idle worker's first request waits for others (default {DEFAULT_WINDOW_MS:g})",
    )
    parser.add_argument(
        "--explain-queue",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help=f"attributions waiting at most; beyond: skipped, overload (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--max-memory",
        type=_max_memory,
        help='sharded over several GPUs: bytes per local GPU index, JSON ({"0": N, "1": M})',
    )
    parser.add_argument(
        "--payload", type=Path, help="tests only: Python file run after isolation, before the model loads"
    )
    parser.add_argument(
        "--sandbox",
        type=SandboxSettings.from_json,
        default=SandboxSettings(),
        help="isolation settings (JSON, sandbox.isolation.settings)",
    )
    args = parser.parse_args(argv)
    if args.explain_queue < 1:
        parser.error("--explain-queue must be at least 1")
    if args.kind == "transformers" and args.model_dir is None:
        parser.error("--model-dir is required with --kind transformers")
    if args.kind == "echo" and args.model_dir is not None:
        parser.error("--model-dir is not used with --kind echo")
    try:
        args.batching = BatchSettings(max_batch=args.max_batch, window_s=args.batch_window_ms / 1000)
    except ValueError as exc:
        parser.error(f"--max-batch/--batch-window-ms: {exc}")
    return args


def _warm_imports(model_dir: Path, allow_pickle_weights: bool) -> None:
    """Import the model runtime while the interpreter's files are still readable (before a uid drop
    that keeps no read capability); skipped for a directory that will be refused anyway."""
    try:
        check_model_dir(model_dir, allow_pickle_weights=allow_pickle_weights)
    except WorkerError:
        return
    import explain.attribution  # noqa: F401  (captum: attributions when a policy asks)
    import sandbox.model  # noqa: F401  (torch, transformers)


def strict_refusal(report: IsolationReport, settings: SandboxSettings) -> str | None:
    """In strict mode, why the worker must not load a model; None when it may."""
    missing = report.missing(settings.optional)
    if not settings.strict or not missing:
        return None
    return (
        "sandbox.strict: refusing to load the model without isolation layer(s) "
        f"{describe_missing(missing)}; fix the host or list the layer in sandbox.optional"
    )


def read_payload(path: Path) -> CodeType:
    """Compile the test payload while its file is still readable (before isolation)."""
    return compile(path.read_bytes(), str(path), "exec")


def run_payload(code: CodeType) -> str | None:
    """Run the payload in this process; the exception it raised, as text, or None if it returned."""
    try:
        exec(code, {"__name__": "__llmos_payload__", "__builtins__": __builtins__})  # noqa: S102
    except Exception as exc:  # the payload's outcome, whatever it is, goes to the gateway
        return f"payload raised {type(exc).__name__}: {exc}"[:4000]
    return None


def main(argv: Sequence[str] | None = None, *, after_isolation: Callable[[], None] | None = None) -> int:
    """Run the worker; ``after_isolation`` (a fork server's child: ``sandbox.forkchild``) runs
    right after isolation, where the first thread may start."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s worker[{args.name} pid={os.getpid()}] %(levelname)s %(message)s",
    )
    # Read before isolation, so later filesystem restrictions need not allow it; kept in memory only.
    canaries: Canaries | CanaryFileError = NO_CANARIES
    if args.canaries is not None:
        try:
            canaries = load_canaries(args.canaries)
        except CanaryFileError as exc:
            canaries = exc
    payload = None if args.payload is None else read_payload(args.payload)
    model_dir: Path | None = args.model_dir
    allow_pickle: bool = args.unsafe_allow_pickle_weights
    warm = None if model_dir is None else lambda: _warm_imports(model_dir, allow_pickle)
    report = apply_isolation(args.fd, args.sandbox, model_dir=model_dir, warm=warm)
    if after_isolation is not None:
        after_isolation()
    sock = socket.socket(fileno=args.fd)
    channel = Channel(sock)

    def fatal(code: str, message: str, exit_code: int = 2, *, logged_as: str = "") -> int:
        log.error("%s%s", logged_as, message)
        channel.send({"type": "fatal", "code": code, "message": message})
        return exit_code

    try:
        if isinstance(canaries, CanaryFileError):
            return fatal("canary_file_invalid", str(canaries), logged_as="canary file refused: ")
        refusal = strict_refusal(report, args.sandbox)
        if refusal is not None:
            return fatal("sandbox_strict", refusal)
        if payload is not None:
            log.warning("running the test payload %s", args.payload)
            outcome = run_payload(payload)
            if outcome is not None:
                return fatal("payload_failed", outcome, 4)
        try:
            model = load_backend(
                args.kind, args.model_dir, allow_pickle_weights=allow_pickle, max_memory=args.max_memory
            )
        except WorkerError as exc:
            code = exc.code if isinstance(exc, ModelLoadError) else "model_load_failed"
            return fatal(code, str(exc), logged_as="model load failed: ")
        channel.send(
            {
                "type": "ready",
                "model": args.name,
                "context_length": model.context_length,
                "pid": os.getpid(),
                "isolation": report.to_dict(),
            }
        )
        log.info(
            "ready (%s model, context length %d, %d canaries); isolation %s",
            args.kind,
            model.context_length,
            len(canaries),
            report.summary(),
        )
        serve(channel, model, canaries, args.batching, explain_queue=args.explain_queue)
        return 0
    except OSError as exc:
        log.error("channel to the gateway failed: %s", exc)
        return 3
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
