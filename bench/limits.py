"""Per-request cost of rate limiting: one admit() and one charge(), memory vs Redis.

    .venv/bin/python bench/limits.py [--n 5000]

Each request counts against a principal and its tenant, each with requests-per-minute,
tokens-per-minute and daily-token limits (six buckets; high enough never to refuse). The Redis
store talks to a redis-server this script starts on a free loopback port (no persistence), over
TCP, one Lua script per call. Prints p50/p99 per request in milliseconds.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from gateway.limits.memory import MemoryLimitStore  # noqa: E402
from gateway.limits.redis_store import RedisLimitStore  # noqa: E402
from gateway.limits.store import LimitStore  # noqa: E402
from gateway.limits.values import Limits, Subject  # noqa: E402

BIG = Limits(rpm=10**9, tpm=10**12, daily_tokens=10**15)
SUBJECTS = [Subject("principal", "key:0123456789abcdef", BIG), Subject("tenant", "acme", BIG)]


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    probe = redis.Redis(port=port)
    for _ in range(500):
        try:
            if probe.ping():
                probe.close()
                return proc, port
        except redis.ConnectionError:
            time.sleep(0.01)
    proc.kill()
    sys.exit("redis-server did not start")


def per_request_ms(store: LimitStore, n: int) -> list[float]:
    for _ in range(100):  # warm up (connection, script cache)
        store.admit(SUBJECTS, time.time())
        store.charge(SUBJECTS, 300, time.time())
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        now = time.time()
        store.admit(SUBJECTS, now)
        store.charge(SUBJECTS, 300, now)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    n = ap.parse_args().n
    proc, port = start_redis(Path(tempfile.mkdtemp(prefix="llmos-bench-redis-")))
    try:
        memory = MemoryLimitStore()
        shared = RedisLimitStore.from_url(f"redis://127.0.0.1:{port}/0", key_prefix="bench:", timeout_s=1.0)
        rows = [("memory", per_request_ms(memory, n)), ("redis (loopback TCP)", per_request_ms(shared, n))]
        shared.close()
    finally:
        proc.terminate()
        proc.wait()
    print(f"admit + charge per request, 2 subjects x 3 limits, n={n}")
    print(f"{'backend':<22} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in rows:
        q = statistics.quantiles(samples, n=100)
        print(f"{name:<22} {q[49]:>8.3f} {q[98]:>8.3f}")


if __name__ == "__main__":
    main()
