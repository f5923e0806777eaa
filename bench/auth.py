"""Per-request cost of authentication, through ``Authenticator.authenticate`` as the gateway calls it.

    .venv/bin/python bench/auth.py [--n 5000] [--warmup 500]

One ``Authenticator`` holds all three ways in, as ``gateway.runtime`` builds it:

* API key: ``ApiKeyStore`` on a temporary SQLite file (WAL) with a 32-byte pepper; one key.
  ``last_used_at`` is written at most once a minute per key, so the steady state timed here is
  one connection + SELECT + HMAC-SHA256 + constant-time compare.
* OIDC JWT: ``TokenVerifier`` with one issuer (explicit ``jwks_uri``, audience ``llmos``) whose
  JWKS holds an ES256, an EdDSA and an RS256 (2048-bit) key, each with its own kid, served by an
  in-memory fetch (no network) and warmed once; tokens expire in 30 days. Timed per algorithm.
* mTLS: ``CertMapper`` over 50 configured clients; the certificate (``getpeercert()`` shape) has
  a SAN URI matching the last entry (the longest scan).

Baselines in the same run: HMAC-SHA256 of the key + ``hmac.compare_digest`` (the key check
without the database) and joserfc's raw signature verification (``model.verify`` with the very
key object the verifier uses). Prints p50/p95/p99 per call in milliseconds, each method's p50
against the 0.2 ms target, and each method's p50 against its baseline's.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import MtlsClient  # noqa: E402
from gateway.identity import Authenticator  # noqa: E402
from gateway.keys import ApiKeyStore  # noqa: E402
from gateway.mtls import CertMapper  # noqa: E402
from gateway.oidc import OidcConfig, OidcIssuerConfig, TokenVerifier  # noqa: E402
from gateway.oidc.compact import parse_unverified  # noqa: E402
from gateway.oidc.verify import jws_algorithms  # noqa: E402
from tests.gateway.oidc.conftest import StaticFetch  # noqa: E402
from tests.gateway.oidc.idp import KeyType, generate_key, public_jwk, sign  # noqa: E402

TARGET_MS = 0.2
ISSUER = "https://idp.bench.example"
JWKS_URI = ISSUER + "/jwks"
KEY_TYPES: dict[str, KeyType] = {"ES256": "EC", "EdDSA": "OKP", "RS256": "RSA"}
MTLS_CLIENTS = 50


def samples_ms(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1e6)
    return out


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[94], q[98]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="timed calls per method")
    ap.add_argument("--warmup", type=int, default=500, help="untimed calls per method first")
    args = ap.parse_args()
    n, warmup = args.n, args.warmup
    tmp = Path(tempfile.mkdtemp(prefix="llmos-bench-auth-"))

    # --- API key
    pepper = b"p" * 32
    keys = ApiKeyStore(tmp / "keys.db", pepper)
    api_key, _ = keys.create("bench", "user", "t")

    # --- OIDC: one issuer, one JWKS with a key per algorithm, fetched from memory
    signing = {alg: generate_key(kty, kid=f"bench-{alg.lower()}") for alg, kty in KEY_TYPES.items()}
    fetch = StaticFetch({JWKS_URI: {"keys": [public_jwk(k) for k in signing.values()]}})
    issuer = OidcIssuerConfig(issuer=ISSUER, discovery=False, jwks_uri=JWKS_URI, audiences=["llmos"])
    tokens = TokenVerifier(OidcConfig(issuers=[issuer]), fetch)
    if tokens.warm():
        sys.exit("JWKS warm-up failed")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "llmos",
        "sub": "svc-bench",
        "tenant": "t",
        "roles": ["user"],
        "iat": now,
        "nbf": now,
        "exp": now + 30 * 86400,
        "jti": "bench",
    }
    jwts = {alg: sign(claims, key, alg=alg) for alg, key in signing.items()}

    # --- mTLS: 50 configured clients, the certificate matches the last one
    clients = [
        MtlsClient(
            match=f"uri:spiffe://bench.example/ns/prod/sa/svc-{i:02d}",
            name=f"svc-{i:02d}",
            tenant="t",
            roles=["user"],
        )
        for i in range(MTLS_CLIENTS)
    ]
    last = MTLS_CLIENTS - 1
    cert: dict[str, object] = {
        "subject": ((("organizationName", "bench"),), (("commonName", f"svc-{last:02d}.bench.example"),)),
        "issuer": ((("commonName", "bench client CA"),),),
        "version": 3,
        "serialNumber": "1000",
        "notBefore": "Jan  1 00:00:00 2025 GMT",
        "notAfter": "Jan  1 00:00:00 2035 GMT",
        "subjectAltName": (
            ("DNS", f"svc-{last:02d}.bench.example"),
            ("URI", f"spiffe://bench.example/ns/prod/sa/svc-{last:02d}"),
        ),
    }

    auth = Authenticator(keys, tokens=tokens, certs=CertMapper(clients))

    # Sanity: every credential authenticates, by the method meant.
    assert auth.authenticate(f"Bearer {api_key}").principal.auth_method == "api_key"
    for jwt in jwts.values():
        assert auth.authenticate(f"Bearer {jwt}").principal.auth_method == "oidc"
    assert auth.authenticate(None, cert).principal.name == f"svc-{last:02d}"

    # --- baselines
    stored = hmac.new(pepper, api_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def hmac_check() -> bool:
        return hmac.compare_digest(
            stored, hmac.new(pepper, api_key.encode("utf-8"), hashlib.sha256).hexdigest()
        )

    models = jws_algorithms(list(KEY_TYPES))
    ring = tokens.issuer_keys(ISSUER).ring
    assert ring is not None

    def raw_verify(alg: str) -> Callable[[], bool]:
        parts = parse_unverified(jwts[alg])
        found = ring.find(str(signing[alg].kid), alg)
        assert found is not None
        model, key, data, sig = models[alg], found.jwk, parts.signing_input, parts.signature
        assert model.verify(data, sig, key)
        return lambda: model.verify(data, sig, key)

    # (name, baseline name or None, callable)
    cases: list[tuple[str, str | None, Callable[[], object]]] = [
        ("baseline: hmac-sha256 + compare_digest", None, hmac_check),
        *[(f"baseline: joserfc verify {alg}", None, raw_verify(alg)) for alg in KEY_TYPES],
        (
            "api key (sqlite + hmac)",
            "baseline: hmac-sha256 + compare_digest",
            lambda: auth.authenticate(f"Bearer {api_key}"),
        ),
        *[
            (
                f"oidc jwt {alg} (cached jwks)",
                f"baseline: joserfc verify {alg}",
                (lambda jwt: lambda: auth.authenticate(f"Bearer {jwt}"))(jwts[alg]),
            )
            for alg in KEY_TYPES
        ],
        (f"mtls san uri (match {MTLS_CLIENTS}/{MTLS_CLIENTS})", None, lambda: auth.authenticate(None, cert)),
    ]
    fetches_before = len(fetch.calls)
    results = {name: (base, percentiles(samples_ms(fn, n, warmup))) for name, base, fn in cases}
    fetches_during = len(fetch.calls) - fetches_before
    last_used = keys.get("bench").last_used_at

    print(f"# authentication cost per call, n={n} timed after {warmup} warm-up calls per method")
    print(f"# python {sys.version.split()[0]}, target p50 < {TARGET_MS} ms per request")
    header = (
        f"{'method':<42} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'p50/target':>10} {'p50<0.2ms':>9} {'p50/baseline':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, (base, (p50, p95, p99)) in results.items():
        is_baseline = name.startswith("baseline")
        verdict = "" if is_baseline else ("yes" if p50 < TARGET_MS else "NO")
        vs_base = "" if base is None else f"{p50 / results[base][1][0]:.1f}x"
        print(
            f"{name:<42} {p50:>8.4f} {p95:>8.4f} {p99:>8.4f} "
            f"{p50 / TARGET_MS:>10.2f} {verdict:>9} {vs_base:>12}"
        )
    print()
    for name, (_, (p50, _, _)) in results.items():
        if not name.startswith("baseline"):
            word = "under" if p50 < TARGET_MS else "OVER"
            print(f"{name}: p50 {p50:.4f} ms = {p50 / TARGET_MS:.2f}x target, {word} {TARGET_MS} ms")
    print(f"# JWKS fetches during timing: {fetches_during}; api key last_used_at: {last_used}")


if __name__ == "__main__":
    main()
