"""Detached Ed25519 signatures over policy bundles.

A signed policy directory holds ``.signature``: one line, the base64 of an Ed25519 signature
over the UTF-8 bytes of the bundle's digest string (``sha256:<hex>``, see ``bundle.py``). The
file is not part of the digest: bundles read only ``*.rego`` and ``*.json``. Any change to a
module, test or data file changes the digest, and the old signature no longer verifies.

With ``policy.public_key`` set, the gateway refuses (at startup and on every reload) a bundle
whose signature is missing or does not verify: ``PolicyError`` ``policy_signature_invalid``.
Keys are PEM files: the private key PKCS#8, the public key SubjectPublicKeyInfo (the format of
the audit keys in ``gateway.audit.keys``, whose ``generate_signing_key`` can create a pair).
Errors name the file; they never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.keys import load_private_key, load_public_key
from gateway.errors import AuditError, PolicyError
from gateway.policy.bundle import PolicyBundle, load_bundle

SIGNATURE_FILE = ".signature"
INVALID = "policy_signature_invalid"
KEY_INVALID = "policy_key_invalid"


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 private key; refuses one that group or other may read."""
    try:
        return load_private_key(path, what="policy signing key")
    except AuditError as exc:  # the shared key-file loader speaks AuditError: translate it
        raise PolicyError(str(exc), code=KEY_INVALID) from exc


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """A SubjectPublicKeyInfo PEM Ed25519 public key (``policy.public_key``)."""
    try:
        return load_public_key(path, what="policy public key")
    except AuditError as exc:
        raise PolicyError(str(exc), code=KEY_INVALID) from exc


def sign_bundle(policy_dir: Path, private_key_path: Path) -> str:
    """Sign the bundle in ``policy_dir``: write ``policy_dir/.signature``; return the signed digest."""
    key = load_signing_key(private_key_path)
    bundle = load_bundle(Path(policy_dir))
    signature = key.sign(bundle.digest.encode("utf-8"))
    target = bundle.root / SIGNATURE_FILE
    tmp = target.with_name(SIGNATURE_FILE + ".tmp")
    try:
        # Written beside, then renamed: a watching gateway never reads half a signature.
        tmp.write_text(base64.b64encode(signature).decode("ascii") + "\n", encoding="ascii")
        os.replace(tmp, target)
    except OSError as exc:
        raise PolicyError(f"cannot write {target}: {exc.strerror}", code="policy_invalid") from exc
    return bundle.digest


def verify_bundle(bundle: PolicyBundle, public_key: Ed25519PublicKey) -> None:
    """Raise ``PolicyError(policy_signature_invalid)`` unless ``.signature`` signs ``bundle.digest``."""
    path = bundle.root / SIGNATURE_FILE
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise PolicyError(
            f"{path}: the policy bundle is not signed, and policy.public_key requires a signature;"
            " sign it with sign_bundle (llmos policy sign)",
            code=INVALID,
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy signature", code=INVALID) from exc
    try:
        signature = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PolicyError(f"{path}: the policy signature is not base64", code=INVALID) from exc
    try:
        public_key.verify(signature, bundle.digest.encode("utf-8"))
    except InvalidSignature as exc:
        raise PolicyError(
            f"{path}: the signature does not match policy {bundle.digest} under policy.public_key"
            " (files changed after signing, or signed with another key)",
            code=INVALID,
        ) from exc
