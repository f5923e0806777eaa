"""Client-certificate identities and their mapping to principals (pure; the TLS side is in e2e)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config, MtlsClient
from gateway.errors import ConfigError
from gateway.identity import Authenticator, AuthFailure
from gateway.keys import ApiKeyStore
from gateway.mtls import CertMapper, identities, peer_certificate

# The shape ssl.SSLSocket.getpeercert() returns for a verified certificate.
CERT: dict[str, Any] = {
    "subject": ((("organizationName", "Acme"),), (("commonName", "svc-a"),)),
    "subjectAltName": (
        ("URI", "spiffe://acme.example/ns/prod/sa/svc-a"),
        ("DNS", "svc-a.acme.internal"),
        ("IP Address", "10.0.0.7"),
        ("email", "ops@acme.example"),
    ),
}


def test_identities_come_from_the_sans_and_the_common_name() -> None:
    assert identities(CERT) == [
        "uri:spiffe://acme.example/ns/prod/sa/svc-a",
        "dns:svc-a.acme.internal",
        "email:ops@acme.example",
        "cn:svc-a",
    ]
    assert identities({}) == []


def clients(*matches: str) -> list[MtlsClient]:
    return [MtlsClient(match=m, name=f"c{i}", tenant="acme", roles=["user"]) for i, m in enumerate(matches)]


def test_the_first_matching_client_names_the_principal() -> None:
    mapper = CertMapper(clients("cn:other", "dns:svc-a.acme.internal", "cn:svc-a"))
    principal = mapper(CERT)
    assert principal is not None
    assert (principal.name, principal.tenant, principal.roles, principal.auth_method) == (
        "c1",
        "acme",
        ("user",),
        "mtls",
    )
    assert principal.id.startswith("mtls:") and "svc-a" not in principal.id  # stable, not the subject text


def test_an_unmatched_certificate_maps_to_nobody() -> None:
    assert CertMapper(clients("cn:svc-b", "uri:spiffe://acme.example/ns/prod/sa/svc-b"))(CERT) is None
    # A common name that merely contains the configured one does not match.
    assert CertMapper(clients("cn:svc"))(CERT) is None


def test_peer_certificate_is_read_from_the_tls_extension() -> None:
    assert peer_certificate({"extensions": {"tls": {"peer_cert": CERT}}}) == CERT
    assert peer_certificate({"extensions": {"tls": {"peer_cert": {}}}}) is None  # unverified: nothing
    assert peer_certificate({}) is None
    assert peer_certificate({"extensions": {"tls": "odd"}}) is None


def test_a_certificate_is_used_only_without_an_authorization_header(tmp_path: Path) -> None:
    keys = ApiKeyStore(tmp_path / "keys.db", b"p" * 32)
    auth = Authenticator(keys, certs=CertMapper(clients("cn:svc-a")))
    assert auth.authenticate(None, CERT).principal.auth_method == "mtls"
    assert auth.authenticate("", CERT).principal.auth_method == "mtls"
    with pytest.raises(AuthFailure) as bad_key:  # a presented credential that fails is not retried
        auth.authenticate("Bearer sk-llmos-0123456789abcdef-" + "x" * 43, CERT)
    assert bad_key.value.reason == "invalid_api_key"
    with pytest.raises(AuthFailure) as unknown:
        Authenticator(keys, certs=CertMapper(clients("cn:nobody"))).authenticate(None, CERT)
    assert (unknown.value.reason, unknown.value.method, unknown.value.status) == (
        "unknown_certificate",
        "mtls",
        401,
    )
    with pytest.raises(AuthFailure) as off:  # mTLS authentication not enabled: the certificate is ignored
        Authenticator(keys).authenticate(None, CERT)
    assert off.value.reason == "missing"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"auth": {"mtls": {"enabled": True}}}, "auth.mtls.enabled needs server.tls"),
        ({"server": {"tls": {"certfile": "c", "keyfile": "k", "client_certs": "required"}}}, "client_ca"),
        (
            {
                "auth": {
                    "mtls": {"clients": [{"match": "subject:x", "name": "n", "tenant": "t", "roles": ["r"]}]}
                }
            },
            "match",
        ),
        (
            {"auth": {"mtls": {"clients": [{"match": "cn:x", "name": "n", "tenant": "t", "roles": []}]}}},
            "roles",
        ),
    ],
)
def test_bad_mtls_configuration_is_refused(tmp_path: Path, data: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Config.from_mapping(data, source="llmos.yaml", base_dir=tmp_path)


def test_mtls_configuration_resolves_paths(tmp_path: Path) -> None:
    config = Config.from_mapping(
        {
            "server": {
                "tls": {
                    "certfile": "s.pem",
                    "keyfile": "s.key",
                    "client_ca": "ca.pem",
                    "client_certs": "optional",
                }
            },
            "auth": {
                "mtls": {
                    "enabled": True,
                    "clients": [{"match": "cn:a", "name": "a", "tenant": "t", "roles": ["user"]}],
                }
            },
        },
        source="llmos.yaml",
        base_dir=tmp_path,
    )
    assert config.server.tls is not None and config.server.tls.client_ca == tmp_path / "ca.pem"
