"""A fast mock OpenAI-compatible upstream for the gateway benchmarks (raw asyncio, uvloop if present).

    .venv/bin/python bench/mock_upstream.py --port 8000 --api-key KEY [--chunks 16] [--chunk-delay-ms 0]

HTTP/1.1 with keep-alive (and pipelining) on 127.0.0.1. It answers
  POST /v1/chat/completions  a chat.completion with ``usage``, or with ``"stream": true`` SSE:
                             a role chunk, ``--chunks`` content chunks, a chunk with the
                             finish_reason, a usage chunk if ``stream_options.include_usage``,
                             then ``data: [DONE]`` (chunked transfer encoding, one HTTP chunk
                             per event);
  GET  /v1/models            the one model list (the names asked for so far, or ``bench``).
Every request needs ``Authorization: Bearer <--api-key>``: otherwise 401 in the OpenAI error
envelope. Answers are a fixed text: the prompt is never echoed. ``--port 0`` picks a free port;
the first line on stdout is ``listening on 127.0.0.1:PORT`` once the socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from typing import Any, cast

ANSWER = "Here is a concise summary of the main points, with recommended next steps for the team to review."
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
)
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


def answer_pieces(chunks: int) -> list[str]:
    """The content of each streamed chunk; joined, they are the non-streamed answer."""
    words = itertools.islice(itertools.cycle(ANSWER.split(" ")), chunks)
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def error_body(status: int, message: str, code: str) -> bytes:
    err = {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": None}
    return json.dumps({"error": {**err, "code": code}}).encode()


class Answers:
    """Builds response bodies; pure (no I/O), shared by every connection."""

    def __init__(self, chunks: int) -> None:
        self.pieces = answer_pieces(chunks)
        self.text = "".join(self.pieces)
        message = {"role": "assistant", "content": self.text, "refusal": None}
        self.message = json.dumps(
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}, separators=(",", ":")
        )
        self.quoted: dict[str, str] = {}
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in self.pieces] + [{}]
        reasons = [None] * (len(deltas) - 1) + ["stop"]
        self.choices = [  # the choice of each streamed chunk, as JSON: the same for every answer
            json.dumps({"index": 0, "delta": d, "logprobs": None, "finish_reason": r}, separators=(",", ":"))
            for d, r in zip(deltas, reasons, strict=True)
        ]
        self.ids = itertools.count(1)
        self.models: dict[str, None] = {}

    def head(self, kind: str, model: str) -> str:
        """The start of a completion object, left open: choices (and usage) follow."""
        quoted = self.quoted.get(model)
        if quoted is None:
            quoted = self.quoted[model] = json.dumps(model)
        return (
            f'{{"id":"chatcmpl-mock{next(self.ids)}","object":"{kind}","created":{int(time.time())},'
            f'"model":{quoted},"system_fingerprint":"fp_mock"'
        )

    def usage(self, prompt_tokens: int) -> str:
        n = len(self.pieces)
        return (
            f'{{"prompt_tokens":{prompt_tokens},"completion_tokens":{n},"total_tokens":{prompt_tokens + n}}}'
        )

    def completion(self, model: str, prompt_tokens: int) -> bytes:
        head = self.head("chat.completion", model)
        return f'{head},"choices":[{self.message}],"usage":{self.usage(prompt_tokens)}}}'.encode()

    def stream_events(self, model: str, prompt_tokens: int, include_usage: bool) -> list[bytes]:
        """The SSE events of one streamed answer, each ``data: ...\n\n``."""
        head = self.head("chat.completion.chunk", model)
        tail = ',"usage":null}\n\n' if include_usage else "}\n\n"
        events = [f'data: {head},"choices":[{choice}]{tail}'.encode() for choice in self.choices]
        if include_usage:
            events.append(f'data: {head},"choices":[],"usage":{self.usage(prompt_tokens)}}}\n\n'.encode())
        events.append(b"data: [DONE]\n\n")
        return events

    def model_list(self) -> bytes:
        names = list(self.models) or ["bench"]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"} for m in names]
        return json.dumps({"object": "list", "data": data}).encode()


def prompt_tokens(request: dict[str, Any]) -> int:
    chars = 0
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
    return max(1, chars // 4)


class MockProtocol(asyncio.Protocol):
    """One connection: parses pipelined HTTP/1.1 requests from a buffer and answers them in order."""

    def __init__(self, answers: Answers, auth: bytes, delay_s: float) -> None:
        self.answers, self.auth, self.delay_s = answers, auth, delay_s
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written: later requests wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.respond(400, error_body(400, "request head too large", "bad_request"), close=True)
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                self.respond(400, error_body(400, "malformed request line", "bad_request"), close=True)
                return
            method, target, version = parts
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            try:
                parsed = read_body(self.buffer, end + 4, headers)
            except ValueError as exc:
                self.respond(400, error_body(400, str(exc), "bad_request"), close=True)
                return
            if parsed is None:
                return
            body, consumed = parsed
            del self.buffer[:consumed]
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            self.handle(method, target.split("?", 1)[0], headers, body, close)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes, close: bool) -> None:
        if headers.get("authorization", "").encode("latin-1") != self.auth:
            message = "Incorrect API key provided. You can find your API key in your account settings."
            self.respond(401, error_body(401, message, "invalid_api_key"), close)
        elif path == "/v1/chat/completions" and method == "POST":
            self.chat(body, close)
        elif path == "/v1/models" and method == "GET":
            self.respond(200, self.answers.model_list(), close)
        elif path in ("/v1/chat/completions", "/v1/models"):
            message = f"{method} is not allowed on {path}"
            self.respond(405, error_body(405, message, "method_not_allowed"), close)
        else:
            self.respond(404, error_body(404, f"no route {method} {path}", "not_found"), close)

    def chat(self, body: bytes, close: bool) -> None:
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("the body is not a JSON object")
            model = str(request.get("model") or "bench")
            tokens = prompt_tokens(request)
        except (ValueError, UnicodeDecodeError) as exc:
            self.respond(400, error_body(400, f"invalid JSON body: {exc}", "invalid_json"), close)
            return
        self.answers.models.setdefault(model, None)
        if not request.get("stream"):
            self.respond(200, self.answers.completion(model, tokens), close)
            return
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = self.answers.stream_events(model, tokens, include_usage)
        head = SSE_HEAD + (b"Connection: close\r\n\r\n" if close else b"\r\n")
        chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
        if self.delay_s <= 0:
            self.write(head + b"".join(chunks), close)
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self.slow_stream(head, chunks, close))

    async def slow_stream(self, head: bytes, chunks: list[bytes], close: bool) -> None:
        self.write(head + chunks[0], False)
        for chunk in chunks[1:]:
            await asyncio.sleep(self.delay_s)
            self.write(chunk, False)
        if close and self.transport is not None:
            self.transport.close()
        self.busy = False
        self.process()

    def respond(self, status: int, body: bytes, close: bool) -> None:
        extra = "Connection: close\r\n" if close else ""
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        self.write(head.encode() + body, close)

    def write(self, data: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        if close:
            self.transport.close()
            self.transport = None


def read_body(buffer: bytearray, start: int, headers: dict[str, str]) -> tuple[bytes, int] | None:
    """The request body at ``buffer[start:]``: (body, end offset), None if incomplete; ValueError if bad."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return dechunk(buffer, start)
    length = int(headers.get("content-length", "0") or "0")
    if not 0 <= length <= MAX_BODY:
        raise ValueError(f"bad Content-Length {length}")
    if len(buffer) < start + length:
        return None
    return bytes(buffer[start : start + length]), start + length


def dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked request body from ``buffer[start:]``: (body, end offset), or None if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buffer[pos:eol]).split(b";", 1)[0], 16)  # ValueError: a bad chunk size
        if size > MAX_BODY:
            raise ValueError("chunk too large")
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", eol)
            if buffer[eol : eol + 4] == b"\r\n\r\n":
                return bytes(body), eol + 4
            return None if trailer_end < 0 else (bytes(body), trailer_end + 4)
        if len(buffer) < eol + 2 + size + 2:
            return None
        body += buffer[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def serve(port: int, api_key: str, chunks: int, delay_ms: float) -> None:
    answers = Answers(chunks)
    auth = f"Bearer {api_key}".encode("latin-1")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(answers, auth, delay_ms / 1000), "127.0.0.1", port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, printed)")
    ap.add_argument("--api-key", required=True, help="the key clients must send as Bearer")
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per streamed answer")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed events")
    args = ap.parse_args(argv)
    if args.chunks < 1:
        ap.error("--chunks must be at least 1")
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(args.port, args.api_key, args.chunks, args.chunk_delay_ms))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
