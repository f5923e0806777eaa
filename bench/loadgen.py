"""Closed-loop HTTP load generator for bench/proxies.py: aiohttp on uvloop, in its own process.

    .venv/bin/python bench/loadgen.py      (reads one JSON command per line on stdin)

Each command line is a JSON object; the answer is one JSON line on stdout:
  {"op": "run", "url", "key", "model", "stream", "workload", "concurrency", "duration"}
      ``concurrency`` lanes, each on its own keep-alive connection, send chat requests back to
      back for ``duration`` seconds, after one untimed request each that opens the connections
      (requests under way at the deadline finish and count; so does their time). Every
      request carries a new user message of ``workload`` (bench/prompts.py: ``chat``, a fixed
      system prompt and a new ~325-character user turn; ``unique``, a new ~1 KB user message).
      Answers: counts, latency percentiles (ms), requests/s and, for streams, the time to the
      first content chunk.
  {"op": "check", "url", "key", "model", "stream", "workload", "expect"}
      one request, parsed: the answer's text must be ``expect`` (and a stream must carry usage
      and end with [DONE]). Answers {"ok": true} or {"ok": false, "error": "..."}.
  {"op": "quit"}
The client costs ~60 us of CPU per request (httpx would cost ~1.3 ms: too much to drive a fast
gateway), so run it on its own core, away from the gateway under test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mock_upstream import loop_factory
from bench.prompts import messages

FIRST_CONTENT = re.compile(rb'"content":"[^"]')  # a delta with text (the role chunk has "")
REQUEST_TIMEOUT_S = 60.0
SERIAL = itertools.count()  # every request in this process gets a new user message


def body(model: str, stream: bool, workload: str) -> bytes:
    request: dict[str, Any] = {
        "model": model,
        "messages": messages(workload, next(SERIAL)),
        "max_tokens": 64,
    }
    if stream:
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return json.dumps(request, separators=(",", ":")).encode()


def pct(ordered: list[float], q: float) -> float:
    """The q-th percentile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Lane:
    """One closed-loop client: a request, its answer, the next request."""

    def __init__(self, session: aiohttp.ClientSession, cmd: dict[str, Any]) -> None:
        self.session, self.url, self.model, self.stream = session, cmd["url"], cmd["model"], cmd["stream"]
        self.workload = cmd["workload"]
        self.headers = {"Authorization": f"Bearer {cmd['key']}", "Content-Type": "application/json"}
        self.latencies: list[float] = []
        self.ttfb: list[float] = []
        self.errors: list[str] = []

    async def once(self, record: bool) -> None:
        data = body(self.model, self.stream, self.workload)
        t0 = time.perf_counter()
        first = None
        try:
            async with self.session.post(self.url, data=data, headers=self.headers) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
                if not self.stream:
                    await resp.read()
                else:
                    buf = bytearray()
                    while chunk := await resp.content.readany():
                        buf += chunk
                        if first is None and FIRST_CONTENT.search(buf):
                            first = time.perf_counter()
                    if not buf.rstrip().endswith(b"data: [DONE]"):
                        raise ValueError("the stream did not end with data: [DONE]")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        if record:
            self.latencies.append((time.perf_counter() - t0) * 1000)
            if first is not None:
                self.ttfb.append((first - t0) * 1000)

    async def run_until(self, deadline: float) -> float:
        """Requests until ``deadline``; returns when the last one ended."""
        while time.perf_counter() < deadline:
            await self.once(record=True)
        return time.perf_counter()


def session_for(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=None, use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


async def run(cmd: dict[str, Any]) -> dict[str, Any]:
    async with session_for(cmd["concurrency"]) as session:
        lanes = [Lane(session, cmd) for _ in range(cmd["concurrency"])]
        await asyncio.gather(*(lane.once(record=False) for lane in lanes))  # connections open, untimed
        start = time.perf_counter()
        ends = await asyncio.gather(*(lane.run_until(start + cmd["duration"]) for lane in lanes))
        elapsed = max(ends) - start
    latencies = sorted(itertools.chain.from_iterable(lane.latencies for lane in lanes))
    ttfb = sorted(itertools.chain.from_iterable(lane.ttfb for lane in lanes))
    errors = list(itertools.chain.from_iterable(lane.errors for lane in lanes))
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_sample": errors[0] if errors else None,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        **{f"p{q}": pct(latencies, q) for q in (50, 95, 99)},
        **({f"ttfb_p{q}": pct(ttfb, q) for q in (50, 95)} if cmd["stream"] else {}),
    }


async def check(cmd: dict[str, Any]) -> dict[str, Any]:
    """One request, its answer parsed: is it the mock's text, whole and well formed?"""
    headers = {"Authorization": f"Bearer {cmd['key']}", "Content-Type": "application/json"}
    async with (
        session_for(1) as session,
        session.post(
            cmd["url"], data=body(cmd["model"], cmd["stream"], cmd["workload"]), headers=headers
        ) as resp,
    ):
        raw = await resp.read()
    if resp.status != 200:
        return {"ok": False, "error": f"HTTP {resp.status}: {raw[:500].decode(errors='replace')}"}
    try:
        text, usage = parse_stream(raw) if cmd["stream"] else parse_completion(raw)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return {"ok": False, "error": f"malformed answer ({exc}): {raw[:300].decode(errors='replace')}"}
    if text != cmd["expect"]:
        return {"ok": False, "error": f"answer text {text!r} is not the upstream's {cmd['expect']!r}"}
    if not usage:
        return {"ok": False, "error": "no usage in the answer"}
    return {"ok": True}


def parse_completion(raw: bytes) -> tuple[str, bool]:
    answer = json.loads(raw)
    return answer["choices"][0]["message"]["content"], bool(answer.get("usage"))


def parse_stream(raw: bytes) -> tuple[str, bool]:
    events = [line[5:].strip() for line in raw.decode().splitlines() if line.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        raise ValueError("no data: [DONE] at the end")
    text, usage = [], False
    for event in map(json.loads, events[:-1]):
        usage = usage or bool(event.get("usage"))
        for choice in event.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text), usage


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        result = await (run(cmd) if cmd["op"] == "run" else check(cmd))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def main() -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
