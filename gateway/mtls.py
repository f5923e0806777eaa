"""Client-certificate (mTLS) authentication.

The TLS handshake (Python's ``ssl``, configured from ``server.tls``) verifies the client's
certificate against ``client_ca``; only a verified certificate reaches this module. Its
identities are read from the subject common name and the subjectAltName entries and written
as ``cn:<name>``, ``dns:<name>``, ``uri:<uri>`` and ``email:<address>``; the first configured
``auth.mtls.clients`` entry whose ``match`` is among them names the principal. A verified
certificate that matches no entry is refused: the CA vouches for who the peer is, the
configuration says what it may be.

The server side (serving HTTPS, passing the certificate into the request) is
``gateway.tlsserver``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from gateway.config import MtlsClient
from gateway.types import Principal

_SAN_KINDS = {"DNS": "dns", "URI": "uri", "email": "email"}


def identities(cert: Mapping[str, Any]) -> list[str]:
    """The ``kind:value`` identities of a ``getpeercert()`` dict, SANs first."""
    found = [
        f"{_SAN_KINDS[kind]}:{value}"
        for kind, value in cert.get("subjectAltName", ())
        if kind in _SAN_KINDS and isinstance(value, str)
    ]
    for rdn in cert.get("subject", ()):
        for attribute, value in rdn:
            if attribute == "commonName" and isinstance(value, str):
                found.append(f"cn:{value}")
    return found


class CertMapper:
    """Maps a verified client certificate to the configured principal, or None."""

    def __init__(self, clients: list[MtlsClient]) -> None:
        self._clients = list(clients)

    def __call__(self, cert: dict[str, object]) -> Principal | None:
        names = set(identities(cert))
        for client in self._clients:
            if client.match in names:
                tag = hashlib.sha256(client.match.encode("utf-8")).hexdigest()[:16]
                return Principal(
                    id=f"mtls:{tag}",
                    name=client.name,
                    tenant=client.tenant,
                    roles=tuple(client.roles),
                    auth_method="mtls",
                )
        return None


def peer_certificate(scope: Mapping[str, Any]) -> dict[str, object] | None:
    """The verified client certificate of this request, if it came over TLS with one."""
    tls = (scope.get("extensions") or {}).get("tls")
    cert = tls.get("peer_cert") if isinstance(tls, dict) else None
    return cert if isinstance(cert, dict) and cert else None
