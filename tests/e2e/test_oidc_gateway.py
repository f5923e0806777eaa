"""The gateway trusting a real local authlib identity provider: client-credentials tokens,
roles that drive the Rego decision, key rotation, refused tokens, and tenant rate limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config
from tests.gateway.oidc.idp import LocalIdp

pytestmark = pytest.mark.e2e

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIdp]:
    server = LocalIdp().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway_with_idp(idp: LocalIdp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("oidc-gw")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "oidc:\n  issuers:\n"
        f"    - issuer: '{idp.issuer}'\n"
        "      audiences: [llmos]\n"
        "      role_map: {llm-users: user, llm-auditors: auditor}\n"
        "      jwks_cache_s: 1\n"
        "      jwks_refresh_min_interval_s: 0\n"
        "limits:\n  tenants:\n    small: {rpm: 2}\n"
        "models:\n  - name: demo\n    path: state/models/demo\n    threads: 1\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def client(gw: Gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=token, max_retries=0, timeout=60)


def test_a_client_credentials_token_calls_the_gateway(idp: LocalIdp, gateway_with_idp: Gateway) -> None:
    svc = idp.register_client("reporting", tenant="acme", roles=["llm-users"])
    token = idp.access_token(svc)  # over HTTP from the IdP's token endpoint

    with client(gateway_with_idp, token) as oa:
        raw = oa.chat.completions.with_raw_response.create(model="demo", messages=HI, max_tokens=4)
    assert raw.parse().choices[0].message.content is not None
    entry = audit_reader.entry(gateway_with_idp.home, raw.headers["x-request-id"])
    assert entry is not None and entry["decision"] == "allow"
    assert entry["principal_id"].startswith("oidc:") and entry["principal_id"].endswith(":reporting")
    assert (entry["tenant"], entry["auth_method"]) == ("acme", "oidc")
    policy_input = json.loads(entry["policy_input"])
    assert policy_input["principal"]["auth_method"] == "oidc"
    assert policy_input["principal"]["roles"] == ["user"]
    assert token not in json.dumps(audit_reader.entries(gateway_with_idp.home))


def test_token_roles_drive_the_policy(idp: LocalIdp, gateway_with_idp: Gateway) -> None:
    auditor = idp.access_token(idp.register_client("auditing", tenant="acme", roles=["llm-auditors"]))
    with client(gateway_with_idp, auditor) as oa:
        assert [m.id for m in oa.models.list()] == ["demo"]
        with pytest.raises(openai.PermissionDeniedError) as denied:
            oa.chat.completions.create(model="demo", messages=HI, max_tokens=4)
    assert denied.value.code == "role_not_permitted"


def test_key_rotation_is_survived_and_a_retired_key_is_refused(
    idp: LocalIdp, gateway_with_idp: Gateway
) -> None:
    svc = idp.register_client("rotating", tenant="acme", roles=["llm-users"])
    old_kid = idp.signing_key.kid
    old_token = idp.access_token(svc)
    with client(gateway_with_idp, old_token) as oa:
        assert oa.models.list().data

    idp.rotate_key()
    new_token = idp.access_token(svc)  # signed with a kid the gateway has not seen
    with client(gateway_with_idp, new_token) as oa:
        assert oa.models.list().data
    with client(gateway_with_idp, old_token) as oa:
        assert oa.models.list().data  # the old key is still published

    idp.retire_key(str(old_kid))
    time.sleep(1.5)  # past jwks_cache_s: the gateway re-reads the key set
    with client(gateway_with_idp, old_token) as oa, pytest.raises(openai.AuthenticationError) as refused:
        oa.models.list()
    assert refused.value.code == "invalid_token"
    with client(gateway_with_idp, new_token) as oa:
        assert oa.models.list().data


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1_000_000_000}, "auth_expired"),
        ({"aud": "someone-else"}, "auth_bad_audience"),
        ({"iss": "https://idp.example"}, "auth_unknown_issuer"),
    ],
)
def test_bad_tokens_get_a_generic_401_and_an_audited_reason(
    idp: LocalIdp, gateway_with_idp: Gateway, claims: dict[str, object], reason: str
) -> None:
    token = idp.mint(claims, tenant="acme", roles=["llm-users"])
    with gateway_with_idp.http() as http:
        r = http.get("/v1/models", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "Invalid or expired bearer token."
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while (entry := audit_reader.entry(gateway_with_idp.home, rid)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entry is not None and entry["reasons"] == [reason]
    assert token not in json.dumps(entry)
    assert token.split(".")[2] not in gateway_with_idp.log_path.read_text()  # nor in the server log


def test_a_tenant_rate_limit_applies_to_token_callers(idp: LocalIdp, gateway_with_idp: Gateway) -> None:
    a = idp.access_token(idp.register_client("small-a", tenant="small", roles=["llm-users"]))
    b = idp.access_token(idp.register_client("small-b", tenant="small", roles=["llm-users"]))
    with client(gateway_with_idp, a) as oa_a, client(gateway_with_idp, b) as oa_b:
        oa_a.models.list()
        oa_b.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            oa_a.models.list()
    assert limited.value.code == "rate_limit_exceeded"
    retry_after = int(limited.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 30
    assert "tenant small" in limited.value.message
