"""Audit log throughput and verification: durable appends per second with group commit, offline
verification speed, and inclusion-proof size and check time.

    .venv/bin/python bench/audit.py [--entries 20000] [--threads 1 16 64]

Appends go through ``AuditLog.append`` (build, sign, SQLite insert with tree nodes, WAL with
``synchronous=FULL``: every acknowledged append is on disk) from N threads at once; a fresh log
per row. Then ``verify_log`` reads the largest log back (hash chain, signatures, Merkle tree,
checkpoints), and inclusion proofs are made and checked for random entries.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from gateway.audit import merkle  # noqa: E402
from gateway.audit.log import AuditLog  # noqa: E402
from gateway.audit.store import AuditStore  # noqa: E402
from gateway.audit.verify import open_checkpoint, verify_log  # noqa: E402
from gateway.types import AuditRecord  # noqa: E402


def record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req_{n:012d}",
        time="2026-11-29T12:00:00.000+00:00",
        principal_id="key:3f2a9c0d1e4b5a69",
        auth_method="api_key",
        tenant="acme",
        endpoint="chat.completions",
        model="demo",
        decision="allow",
        status=200,
        reasons=(),
        policy_digest="sha256:" + "a" * 64,
        request_digest="hmac-sha256:" + "b" * 64,
        response_digest="hmac-sha256:" + "c" * 64,
        prompt_tokens=120,
        completion_tokens=48,
        latency_ms=230,
    )


def appends(path: Path, key: Ed25519PrivateKey, entries: int, threads: int) -> tuple[float, int]:
    """Appends per second, and transactions used."""
    with AuditLog(path, key) as log:
        per = entries // threads
        start = threading.Barrier(threads + 1)

        def run(t: int) -> None:
            start.wait()
            for i in range(per):
                log.append(record(t * per + i))

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        return per * threads / elapsed, log.commits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 16, 64])
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="llmos-audit-bench-") as tmp:
        print(f"durable appends (synchronous=FULL, group commit), {args.entries} entries per row")
        print(f"{'threads':>8}{'appends/s':>12}{'commits':>9}{'per commit':>12}")
        biggest = Path(tmp) / "unused.db"
        for threads in args.threads:
            path = Path(tmp) / f"audit-{threads}.db"
            rate, commits = appends(path, key, args.entries, threads)
            print(f"{threads:>8}{rate:>12.0f}{commits:>9}{args.entries / max(commits, 1):>12.1f}")
            biggest = path
        t0 = time.perf_counter()
        report = verify_log(biggest, key.public_key())
        elapsed = time.perf_counter() - t0
        print(
            f"\nverify: {report.entries} entries, {report.checkpoints} checkpoints in {elapsed:.2f} s"
            f" = {report.entries / elapsed:.0f} entries/s"
        )
        with AuditStore.open_readonly(biggest) as store:
            latest = store.latest_checkpoint()
            rows = {row.seq: row.body for row in store.iter_entries()}
        assert latest is not None
        cp = open_checkpoint(latest[1], key.public_key())
        with AuditLog(biggest, key) as log:
            rng = random.Random(1)
            sizes, make_ms, check_ms = [], [], []
            for seq in rng.sample(range(1, cp.size + 1), 200):
                t0 = time.perf_counter()
                proof = log.inclusion_proof(seq, cp.size)
                t1 = time.perf_counter()
                merkle.verify_inclusion(
                    merkle.leaf_hash(rows[seq].encode()), seq - 1, cp.size, proof, cp.root_hash
                )
                t2 = time.perf_counter()
                sizes.append(len(proof))
                make_ms.append((t1 - t0) * 1000)
                check_ms.append((t2 - t1) * 1000)
        print(
            f"inclusion proofs in a tree of {cp.size}: {statistics.mean(sizes):.1f} hashes"
            f" ({statistics.mean(sizes) * 32:.0f} bytes) on average, made in"
            f" {statistics.median(make_ms):.3f} ms, checked in {statistics.median(check_ms):.3f} ms (p50)"
        )


if __name__ == "__main__":
    main()
