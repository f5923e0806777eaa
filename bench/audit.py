"""Audit log throughput and verification: durable appends per second with group commit, offline
verification speed (a log file, and an exported bundle of a large log), and inclusion-proof
size and check time.

    .venv/bin/python bench/audit.py [--entries 60000] [--threads 1 16 64]
                                    [--coroutines 1 64 1024 4096] [--bundle-entries 1000000]

Appends go through the log's real write path: each entry encoded, queued to the writer thread,
written with its Merkle nodes and the transaction's signed head in one SQLite transaction
(WAL, ``synchronous=FULL``: every acknowledged append is on disk). Rows: N threads calling
``AuditLog.append``, and N coroutines on one event loop calling ``AuditLog.append_async`` (what
the gateway does); a fresh log per row. The baseline is one caller: one transaction, one fsync,
per entry. Then ``verify_log`` reads the largest log back, inclusion proofs are made and checked
for random entries, and a log of ``--bundle-entries`` entries is exported (``llmos audit
export``) and the bundle verified (``llmos audit verify BUNDLE``): entries per second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
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
from gateway.audit.bundle import export_bundle, verify_bundle  # noqa: E402
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


def threaded(path: Path, key: Ed25519PrivateKey, entries: int, threads: int) -> tuple[float, int]:
    """Appends per second from ``threads`` threads, and transactions used."""
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


def coroutines(path: Path, key: Ed25519PrivateKey, entries: int, tasks: int) -> tuple[float, int]:
    """Appends per second from ``tasks`` coroutines on one event loop, and transactions used."""
    with AuditLog(path, key) as log:
        per = entries // tasks

        async def run(t: int) -> None:
            for i in range(per):
                await log.append_async(record(t * per + i))

        async def main() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(run(t) for t in range(tasks)))
            return time.perf_counter() - t0

        elapsed = asyncio.run(main())
        return per * tasks / elapsed, log.commits


def appends(tmp: Path, key: Ed25519PrivateKey, args: argparse.Namespace) -> Path:
    print(f"durable appends (synchronous=FULL, group commit), {args.entries} entries per row")
    print(f"{'callers':>18}{'appends/s':>11}{'vs 1':>7}{'commits':>9}{'per commit':>12}")
    biggest, baseline = tmp / "unused.db", None
    rows = [("thread", n, threaded) for n in args.threads] + [
        ("coroutine", n, coroutines) for n in args.coroutines
    ]
    for kind, n, run in rows:
        path = tmp / f"audit-{kind}-{n}.db"
        count = min(args.entries, 4000) if n == 1 else args.entries  # one fsync each: keep it short
        rate, commits = run(path, key, count, n)
        baseline = baseline or rate
        label = f"{n} {kind}{'s' if n > 1 else ''}"
        print(f"{label:>18}{rate:>11.0f}{rate / baseline:>6.1f}x{commits:>9}{count / max(commits, 1):>12.1f}")
        biggest = path if count == args.entries else biggest
    return biggest


def verification(path: Path, key: Ed25519PrivateKey) -> None:
    t0 = time.perf_counter()
    report = verify_log(path, key.public_key())
    elapsed = time.perf_counter() - t0
    print(
        f"\nverify a log file: {report.entries} entries, {report.checkpoints} checkpoints and the signed head"
        f" in {elapsed:.2f} s = {report.entries / elapsed:.0f} entries/s"
    )
    with AuditStore.open_readonly(path) as store:
        latest = store.latest_checkpoint()
        rows = {row.seq: row.body for row in store.iter_entries()}
    assert latest is not None
    cp = open_checkpoint(latest[1], key.public_key())
    with AuditLog(path, key) as log:
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


def bundle(tmp: Path, key: Ed25519PrivateKey, entries: int) -> None:
    path = tmp / "big.db"
    t0 = time.perf_counter()
    rate, _ = coroutines(path, key, entries, 4096)
    print(f"\na log of {entries} entries: written in {time.perf_counter() - t0:.0f} s ({rate:.0f} appends/s)")
    out = tmp / "bundle"
    t0 = time.perf_counter()
    exported = export_bundle(path, out, public_keys=[key.public_key()])
    elapsed = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(
        f"export: {exported.entries} entries with inclusion proofs in {elapsed:.0f} s"
        f" ({exported.entries / elapsed:.0f} entries/s, {size / 2**20:.0f} MiB)"
    )
    t0 = time.perf_counter()
    report = verify_bundle(out, key.public_key())
    elapsed = time.perf_counter() - t0
    print(
        f"verify the bundle: {report.entries} entries (hash, body, openings, inclusion proof each),"
        f" {report.checkpoints} checkpoints in {elapsed:.1f} s = {report.entries / elapsed:.0f} entries/s"
    )
    shutil.rmtree(out)
    path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=60000)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 16, 64])
    ap.add_argument("--coroutines", type=int, nargs="*", default=[64, 1024, 4096])
    ap.add_argument("--bundle-entries", type=int, default=1_000_000, help="0 skips the bundle rows")
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="llmos-audit-bench-") as tmp:
        biggest = appends(Path(tmp), key, args)
        verification(biggest, key)
        if args.bundle_entries:
            bundle(Path(tmp), key, args.bundle_entries)


if __name__ == "__main__":
    main()
