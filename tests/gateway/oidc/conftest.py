from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.oidc.config import OidcConfig, OidcIssuerConfig
from gateway.oidc.errors import IdpError
from gateway.oidc.verify import TokenVerifier
from tests.gateway.oidc.idp import KeyType, LocalIdp


@dataclass
class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StaticFetch:
    """A ``Fetch`` serving fixed documents by URL and counting requests; ``down`` fails them."""

    documents: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    down: bool = False

    def __call__(self, url: str, timeout_s: float) -> bytes:
        self.calls.append(url)
        if self.down or url not in self.documents:
            raise IdpError(f"GET {url}: unreachable")
        doc = self.documents[url]
        return doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    def count(self, url: str) -> int:
        return self.calls.count(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp() -> Iterator[LocalIdp]:
    server = LocalIdp().start()
    yield server
    server.stop()


@pytest.fixture
def idp_factory() -> Iterator[Callable[..., LocalIdp]]:
    started: list[LocalIdp] = []

    def make(key_type: KeyType = "EC", **kwargs: Any) -> LocalIdp:
        server = LocalIdp(key_type, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nobody listens on (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def issuer_config(issuer: str, **overrides: Any) -> OidcIssuerConfig:
    fields: dict[str, Any] = {"issuer": issuer, "audiences": ["llmos"]}
    fields.update(overrides)
    return OidcIssuerConfig(**fields)


def verifier_for(
    *issuers: OidcIssuerConfig,
    fetch: Callable[[str, float], bytes] | None = None,
    clock: Callable[[], float] = time.time,
    max_token_bytes: int = 8192,
) -> TokenVerifier:
    return TokenVerifier(OidcConfig(issuers=list(issuers), max_token_bytes=max_token_bytes), fetch, clock)
