"""Mutual TLS between gateways and worker hosts.

A worker host presents a certificate for TLS *server* authentication and accepts only clients
whose certificate the configured gateway CA signed *for client authentication*; a gateway
presents a client certificate and accepts only worker hosts whose certificate the worker CA
signed for server authentication, for the expected name. OpenSSL checks the extended key
usage against the role, so a worker's certificate cannot be used to act as a gateway, nor a
gateway's to act as a worker, even when one CA signs both. TLS 1.3 only.
"""

from __future__ import annotations

import ssl
from pathlib import Path

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
