"""Per-request cost of the gateway's own stages, each measured in isolation.

    .venv/bin/python bench/components.py [--n 500]

Times a durable audit append (SQLite WAL, synchronous=FULL, Ed25519 signature), an API-key
lookup (SQLite + HMAC), and a Rego decision (regopy, compiled once) against the interpreter's
uncompiled query path as the baseline the engine replaced.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.audit.keys import generate_signing_key, load_private_key  # noqa: E402
from gateway.audit.log import AuditLog  # noqa: E402
from gateway.keys import ApiKeyStore  # noqa: E402
from gateway.policy.bundle import load_bundle  # noqa: E402
from gateway.policy.engine import RegoEngine, RegoSession  # noqa: E402
from gateway.types import AuditRecord  # noqa: E402

POLICY_INPUT = {
    "principal": {"id": "key:1", "name": "a", "tenant": "t", "roles": ["user"], "auth_method": "api_key"},
    "request": {
        "endpoint": "chat.completions",
        "model": "demo",
        "max_tokens": 16,
        "stream": False,
        "message_count": 1,
    },
    "time": "2026-11-29T00:00:00.000+00:00",
}


def per_call_ms(fn: Callable[[int], object], n: int) -> float:
    fn(-1)  # warm up
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    n = ap.parse_args().n
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    generate_signing_key(tmp / "k.pem", tmp / "k.pub")
    log = AuditLog(tmp / "audit.db", load_private_key(tmp / "k.pem"))
    keys = ApiKeyStore(tmp / "keys.db", b"p" * 32)
    key, _ = keys.create("bench", "user", "t")
    bundle = load_bundle(ROOT / "policies")
    # No decision cache: this row is the cost of evaluating (bench/policy.py measures the cache).
    engine = RegoEngine(bundle, "data.llmos.authz.decision", cache_size=0)
    session = RegoSession(bundle)

    def audit(i: int) -> None:
        log.append(
            AuditRecord(
                request_id=f"r{i}",
                time="t",
                principal_id="p",
                tenant="t",
                endpoint="e",
                model="m",
                decision="allow",
                status=200,
            )
        )

    rows = [
        ("audit append (durable, signed)", per_call_ms(audit, n)),
        ("api key lookup", per_call_ms(lambda _: keys.authenticate(key), n)),
        ("rego decision, compiled, uncached", per_call_ms(lambda _: engine.decide(POLICY_INPUT), n)),
        (
            "rego decision, uncompiled (baseline)",
            per_call_ms(lambda _: session.query("data.llmos.authz.decision", POLICY_INPUT), n),
        ),
    ]
    print(f"# per-call cost, mean of {n} calls")
    for name, ms in rows:
        print(f"{name:<40} {ms:8.3f} ms")
    print(f"compiled vs uncompiled rego: {rows[3][1] / rows[2][1]:.1f}x faster")
    log.close()


if __name__ == "__main__":
    main()
