"""Serving HTTPS with uvicorn, and handing the verified client certificate to the app.

uvicorn does not pass the peer certificate to the application, so ``TlsHttpToolsProtocol``
adds it to each request's ASGI scope under the TLS extension (``scope["extensions"]["tls"]``:
``client_cert_name`` as the ASGI TLS extension has it, plus ``peer_cert``, the
``getpeercert()`` dict that ``gateway.mtls`` reads).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import TlsConfig


def _rfc4514(cert: Mapping[str, Any]) -> str:
    parts = [f"{a}={v}" for rdn in reversed(cert.get("subject", ())) for a, v in rdn]
    return ",".join(parts)


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, putting the verified peer certificate into the scope."""

    _tls: dict[str, object] | None = None

    def connection_made(self, transport: Any) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if cert:
            self._tls = {"client_cert_name": _rfc4514(cert), "peer_cert": cert}
        super().connection_made(transport)

    @property
    def scope(self) -> Any:
        return self.__dict__.get("_scope")

    @scope.setter
    def scope(self, value: Any) -> None:  # an HTTPScope dict, or None between requests
        if value is not None and self._tls is not None:
            value.setdefault("extensions", {})["tls"] = self._tls
        self.__dict__["_scope"] = value


def uvicorn_tls_options(tls: TlsConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that serve HTTPS as configured."""
    options: dict[str, Any] = {"ssl_certfile": str(tls.certfile), "ssl_keyfile": str(tls.keyfile)}
    if tls.client_ca is not None:
        options["ssl_ca_certs"] = str(tls.client_ca)
        options["ssl_cert_reqs"] = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[tls.client_certs]
        options["http"] = TlsHttpToolsProtocol
    return options
