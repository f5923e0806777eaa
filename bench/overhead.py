"""Gateway latency overhead: the same model and prompt, through llmos vs. straight to a worker.

    .venv/bin/python bench/overhead.py [--requests 200] [--rounds 3] [--max-tokens 16]

Starts, in a temporary state directory:
  * a real gateway (`llmos serve`, uvicorn, API-key auth, Rego policy, signed audit with a
    durable SQLite write per request) with its own model worker, and
  * a second, identical model worker driven directly over the framed worker protocol (the
    baseline: no HTTP, no auth, no policy, no audit).
Both answer the same chat request (greedy, fixed max_tokens) at concurrency 1 and 16.
Rounds alternate baseline and gateway so that machine drift hits both. The HTTP client is a
minimal keep-alive HTTP/1.1 client on raw asyncio streams, so client cost stays small
(httpx would add ~1 ms per request here). Prints p50/p95/p99 per path and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams  # noqa: E402
from sandbox.client import ModelWorker, WorkerSpec  # noqa: E402

PROMPT = "Summarise the benefits of running language models behind a policy-enforcing gateway."
LLMOS = str(Path(sys.executable).with_name("llmos"))


class RawHttp:
    """One keep-alive HTTP/1.1 connection; enough for JSON POSTs with Content-Length replies."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        for _attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(head.encode() + body)
            status_line = await self.reader.readline()
            if status_line:
                break
            # The server closed an idle keep-alive connection (uvicorn: after 5 s): reconnect.
            await self.close()
            self.writer = None
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run_load(call: object, n: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def lane(idx: int) -> None:
        for _ in counter:
            t0 = time.perf_counter()
            await call(idx)  # type: ignore[operator]
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    return latencies, n / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="requests per path, concurrency and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, help="torch threads per worker (both paths; default: torch's)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    config = home / "llmos.yaml"
    threads = "null" if args.threads is None else str(args.threads)
    config.write_text(
        f"state_dir: {home}\nmodels:\n  - name: demo\n    path: models/demo\n    threads: {threads}\n"
    )
    env = {**os.environ, "LLMOS_HOME": str(home)}
    key = subprocess.run(
        [LLMOS, "init", "--config", str(config)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [LLMOS, "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    direct = ModelWorker(
        WorkerSpec(name="bench-direct", model_dir=home / "models" / "demo", threads=args.threads)
    )
    await direct.start()
    try:
        await direct.wait_ready(180)
        await wait_http_ready(port)
        body = json.dumps(
            {
                "model": "demo",
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            }
        ).encode()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0)
        conns: list[RawHttp] = []

        async def via_gateway(lane: int) -> None:
            while len(conns) <= lane:
                conns.append(RawHttp("127.0.0.1", port))
            status, payload = await conns[lane].post("/v1/chat/completions", body, headers)
            if status != 200:
                raise RuntimeError(f"gateway answered {status}: {payload[:200]!r}")

        seq = iter(range(10**9))

        async def via_worker(_: int) -> None:
            req = GenerateRequest(
                id=f"bench-{next(seq)}", params=params, messages=(ChatMessage(role="user", content=PROMPT),)
            )
            async for event in direct.generate(req):
                if isinstance(event, DoneEvent):
                    return

        print(
            f"# llmos gateway overhead: demo model, max_tokens={args.max_tokens}, greedy,"
            f" {args.requests} requests"
        )
        print(
            f"# per path, concurrency and round; {args.rounds} rounds alternating;"
            f" CPU count {os.cpu_count()}; worker threads {args.threads or 'torch default'}"
        )
        for c in args.concurrency:
            await run_load(via_worker, 10, c)  # warm up both paths
            await run_load(via_gateway, 10, c)
            results: dict[str, list[float]] = {"direct": [], "gateway": []}
            rates: dict[str, list[float]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                for name, fn in (("direct", via_worker), ("gateway", via_gateway)):
                    lat, rate = await run_load(fn, args.requests, c)
                    results[name] += lat
                    rates[name].append(rate)
            print(f"\nconcurrency {c}")
            print(f"{'path':<8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}")
            for name in ("direct", "gateway"):
                lat = results[name]
                print(
                    f"{name:<8} {pct(lat, 50):8.2f} {pct(lat, 95):8.2f} {pct(lat, 99):8.2f}"
                    f" {statistics.mean(rates[name]):8.1f}"
                )
            d, g = results["direct"], results["gateway"]
            print(
                f"ratio    {pct(g, 50) / pct(d, 50):8.2f} {pct(g, 95) / pct(d, 95):8.2f}"
                f" {pct(g, 99) / pct(d, 99):8.2f}   (gateway / direct)"
            )
            print(f"overhead p50 {pct(g, 50) - pct(d, 50):+.2f} ms")
        for conn in conns:
            await conn.close()
    finally:
        await direct.stop()
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http_ready(port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = (await reader.readline()).split()
            writer.close()
            if len(status) > 1 and status[1] == b"200":
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("gateway did not become ready")


if __name__ == "__main__":
    asyncio.run(main())
