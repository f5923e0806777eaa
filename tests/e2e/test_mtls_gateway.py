"""The gateway over HTTPS with client-certificate authentication, certificates made in the test."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config
from tests.gateway.certs import Issued, TestCa

pytestmark = pytest.mark.e2e

SVC_URI = "spiffe://acme.example/ns/prod/sa/reports"


@dataclass
class Pki:
    ca: TestCa
    server: Issued
    reports: Issued  # mapped to a principal
    stranger: Issued  # issued by the CA, but not configured
    rogue: Issued  # from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = TestCa(root / "ca")
    return Pki(
        ca=ca,
        server=ca.issue("server", "llmos gateway", server=True),
        reports=ca.issue("reports", "reports", uris=(SVC_URI,)),
        stranger=ca.issue("stranger", "stranger", uris=("spiffe://acme.example/ns/prod/sa/other",)),
        rogue=TestCa(root / "rogue", "rogue CA").issue("rogue", "reports", uris=(SVC_URI,)),
    )


@pytest.fixture(scope="module")
def tls_gateway(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("mtls-gw")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\n"
        f"server:\n  port: {port}\n  tls:\n"
        f"    certfile: {pki.server.cert}\n    keyfile: {pki.server.key}\n"
        f"    client_ca: {pki.ca.cert_path}\n    client_certs: optional\n"
        "auth:\n  mtls:\n    enabled: true\n    clients:\n"
        f"      - {{match: 'uri:{SVC_URI}', name: reports, tenant: acme, roles: [user]}}\n"
        "models:\n  - name: demo\n    path: state/models/demo\n    threads: 1\n"
    )
    with serve_config(config, port, root / "state", ca=pki.ca.cert_path) as gw:
        yield gw


def http(gw: Gateway, pki: Pki, cert: Issued | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return httpx.Client(base_url=gw.base_url, verify=context, timeout=60)


def test_a_mapped_client_certificate_is_a_principal(tls_gateway: Gateway, pki: Pki) -> None:
    with http(tls_gateway, pki, pki.reports) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
        # The official client too, sending no Authorization header of its own.
        oa = openai.OpenAI(
            base_url=tls_gateway.base_url + "/v1",
            api_key="unused",
            http_client=client,
            max_retries=0,
        )
        models = oa.models.list(extra_headers={"Authorization": openai.Omit()})
        assert [m.id for m in models] == ["demo"]
    entry = audit_reader.entry(tls_gateway.home, r.headers["x-request-id"])
    assert entry is not None
    assert (entry["auth_method"], entry["tenant"], entry["decision"]) == ("mtls", "acme", "allow")
    assert entry["principal_id"].startswith("mtls:")
    assert json.loads(entry["policy_input"])["principal"]["roles"] == ["user"]


def test_a_verified_but_unmapped_certificate_is_refused(tls_gateway: Gateway, pki: Pki) -> None:
    with http(tls_gateway, pki, pki.stranger) as client:
        r = client.get("/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while (entry := audit_reader.entry(tls_gateway.home, rid)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entry is not None and entry["reasons"] == ["auth_unknown_certificate"]


def test_a_certificate_from_another_ca_fails_the_handshake(tls_gateway: Gateway, pki: Pki) -> None:
    with http(tls_gateway, pki, pki.rogue) as client, pytest.raises(httpx.TransportError):
        client.get("/v1/models")


def test_api_keys_still_work_over_tls_without_a_certificate(tls_gateway: Gateway, pki: Pki) -> None:
    with http(tls_gateway, pki, None) as client:
        assert client.get("/v1/models").status_code == 401  # no credential at all
        ok = client.get("/v1/models", headers={"authorization": f"Bearer {tls_gateway.admin_key}"})
        assert ok.status_code == 200


def test_plain_http_is_not_served(tls_gateway: Gateway) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(tls_gateway.base_url.replace("https://", "http://") + "/healthz", timeout=5)


def test_the_gateway_certificate_is_checked_by_clients(tls_gateway: Gateway) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_gateway.base_url + "/healthz", timeout=5)  # system CAs do not know this one
