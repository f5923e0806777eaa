"""Pure JWKS parsing: a JSON Web Key Set document becomes a ``KeyRing`` of verification keys.

Only asymmetric signing keys are kept, each bound to the one JWS algorithm it may verify:

    kty RSA, modulus >= 2048 bits (<= 8192)   -> RS256
    kty EC,  crv P-256                        -> ES256
    kty OKP, crv Ed25519                      -> EdDSA

A key is skipped, without failing the set, when its ``use`` is not ``sig``, its ``key_ops`` lack
``verify``, its ``alg`` names another algorithm (RFC 9864's ``Ed25519`` counts as EdDSA), it
carries private members (a published private key is compromised), it is of any other type or
curve, or it does not parse. A document that is not a JSON object with a ``keys`` list is an
``IdpError``. Parsed keys are joserfc ``Key`` objects, built once per fetch and reused for every
verification.
"""

from __future__ import annotations

import binascii
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from gateway.oidc.compact import b64url_decode
from gateway.oidc.config import Algorithm
from gateway.oidc.errors import IdpError

log = logging.getLogger("llmos.gateway")

MAX_KEYS = 64  # keys past this many in one document are ignored
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192  # bigger moduli only make verification slow
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REQUIRED = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
# What a JWK's "alg" may say for each algorithm: RFC 9864 names EdDSA-with-Ed25519 "Ed25519".
_ALG_NAMES: dict[str, tuple[str, ...]] = {
    "RS256": ("RS256",),
    "ES256": ("ES256",),
    "EdDSA": ("EdDSA", "Ed25519"),
}


@dataclass(frozen=True)
class VerificationKey:
    """A public key from a JWKS and the single algorithm it verifies."""

    kid: str | None
    alg: Algorithm
    jwk: Key


class KeyRing:
    """An immutable, indexed set of verification keys (one JWKS fetch)."""

    __slots__ = ("_by_alg", "_by_kid", "keys")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        self.keys: tuple[VerificationKey, ...] = tuple(keys)
        by_kid: dict[tuple[str, str], VerificationKey] = {}
        by_alg: dict[str, list[VerificationKey]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault((key.kid, key.alg), key)  # the first of duplicates wins
            by_alg.setdefault(key.alg, []).append(key)
        self._by_kid = by_kid
        self._by_alg = {alg: tuple(keys) for alg, keys in by_alg.items()}

    def find(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key for ``kid`` and ``alg``; without a kid, the only key for ``alg`` (if just one)."""
        if kid is not None:
            return self._by_kid.get((kid, alg))
        candidates = self._by_alg.get(alg, ())
        return candidates[0] if len(candidates) == 1 else None

    @property
    def kids(self) -> tuple[str | None, ...]:
        return tuple(k.kid for k in self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(body: bytes, source: str) -> KeyRing:
    """The usable keys of a JWKS document; ``IdpError`` (naming ``source``) if it is no JWKS."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IdpError(f"{source}: the JWKS is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise IdpError(f"{source}: the JWKS is not an object with a 'keys' list")
    entries: list[Any] = doc["keys"]
    keys = [k for k in (parse_jwk(entry) for entry in entries[:MAX_KEYS]) if k is not None]
    skipped = min(len(entries), MAX_KEYS) - len(keys)
    if skipped or len(entries) > MAX_KEYS:
        log.info(
            "OIDC: %s: using %d of %d published keys (the others are not usable signing keys)",
            source,
            len(keys),
            len(entries),
        )
    return KeyRing(keys)


def parse_jwk(entry: Any) -> VerificationKey | None:
    """One JWK as a verification key, or ``None`` when it is not a usable public signing key."""
    if not isinstance(entry, dict) or _PRIVATE_MEMBERS & entry.keys():
        return None
    kty = entry.get("kty")
    if (
        not isinstance(kty, str)
        or kty not in _REQUIRED
        or any(not isinstance(entry.get(m), str) for m in _REQUIRED[kty])
    ):
        return None
    if entry.get("use", "sig") != "sig":
        return None
    key_ops = entry.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    alg = _algorithm(entry)
    if alg is None or entry.get("alg", alg) not in _ALG_NAMES[alg]:
        return None
    jwk = _import(entry, alg)
    return None if jwk is None else VerificationKey(kid=kid, alg=alg, jwk=jwk)


def _algorithm(entry: dict[str, Any]) -> Algorithm | None:
    kty = entry["kty"]
    if kty == "RSA":
        try:
            bits = int.from_bytes(b64url_decode(entry["n"]), "big").bit_length()
        except ValueError:
            return None
        return "RS256" if RSA_MIN_BITS <= bits <= RSA_MAX_BITS else None
    if kty == "EC":
        return "ES256" if entry["crv"] == "P-256" else None
    return "EdDSA" if entry["crv"] == "Ed25519" else None


def _import(entry: dict[str, Any], alg: Algorithm) -> Key | None:
    # Only the members that define the public key, plus kid: joserfc refuses some optional
    # members it does not know, and use/alg/key_ops have been checked above.
    kept = {m: entry[m] for m in (*_REQUIRED[entry["kty"]], "kty", "kid") if m in entry}
    try:
        if alg == "RS256":
            return RSAKey.import_key(kept)
        if alg == "ES256":
            return ECKey.import_key(kept)
        return OKPKey.import_key(kept)
    except (JoseError, ValueError, TypeError, binascii.Error):
        return None
