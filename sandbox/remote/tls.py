"""Mutual TLS between gateways and worker hosts.

A worker host presents a certificate for TLS *server* authentication and accepts only clients
whose certificate the configured gateway CA signed *for client authentication*; a gateway
presents a client certificate and accepts only worker hosts whose certificate the worker CA
signed for server authentication, for the expected name. Both sides require the extended key
usage of the peer's role (:func:`peer_has_usage`; OpenSSL alone would accept a certificate
without the extension in either role), so a worker's certificate cannot be used to act as a
gateway, nor a gateway's to act as a worker, even when one CA signs both. TLS 1.3 only.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import ConfigError
from gateway.filemode import too_open


def _load(ctx: ssl.SSLContext, cert: Path, key: Path, ca: Path, what: str) -> ssl.SSLContext:
    try:
        if too_open(key.stat()):
            raise ConfigError(
                f"{what}: the private key {key} is readable by others; fix with: chmod 600 {key}"
            )
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read the private key {key} ({exc.__class__.__name__})") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{what}: cannot load the certificate {cert} and key {key} ({exc.__class__.__name__})"
        ) from exc
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: cannot load the CA bundle {ca} ({exc.__class__.__name__})") from exc
    return ctx


def host_context(cert: Path, key: Path, gateway_ca: Path) -> ssl.SSLContext:
    """A worker host's listener: gateway client certificates from ``gateway_ca`` only."""
    return _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, gateway_ca, "worker host TLS")


def gateway_context(cert: Path, key: Path, worker_ca: Path) -> ssl.SSLContext:
    """A gateway's connections to worker hosts: their certificates from ``worker_ca`` only,
    for the name the connection asks for (``server_hostname``)."""
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert, key, worker_ca, "remote worker TLS")
    ctx.check_hostname = True
    return ctx


CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


def peer_has_usage(writer: asyncio.StreamWriter, usage: x509.ObjectIdentifier) -> bool:
    """Whether the peer's certificate names ``usage`` in its extended key usage. OpenSSL's own
    purpose check lets a certificate with no EKU extension act in either role; llmos requires
    the extension, so a certificate issued for one role can never act in the other."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return False
    try:
        eku = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return usage in eku.value
