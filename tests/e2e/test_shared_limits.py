"""Two gateway replicas sharing one limit through a real Redis: a tenant's requests-per-minute
limit holds across both, and a Redis outage fails closed (503) on each."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Gateway, free_port, serve_config
from tests.gateway.limits.redis_server import RedisServer, running_redis
from tests.gateway.oidc.idp import LocalIdp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIdp]:
    server = LocalIdp().start()
    yield server
    server.stop()


def _config(root: Path, port: int, idp: LocalIdp, redis_url: str) -> Path:
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "oidc:\n  issuers:\n"
        f"    - {{issuer: '{idp.issuer}', audiences: [llmos], role_map: {{llm-users: user}}}}\n"
        f"limits:\n  backend: redis\n  redis_url: '{redis_url}'\n  timeout_s: 0.5\n"
        "  default_tenant: {rpm: 1000}\n  tenants:\n    shared: {rpm: 3}\n"
        "models:\n  - name: demo\n    path: state/models/demo\n    threads: 1\n"
    )
    return config


@pytest.fixture(scope="module")
def replicas(
    idp: LocalIdp, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    with ExitStack() as stack:
        gateways = []
        for name in ("a", "b"):
            root = tmp_path_factory.mktemp(f"replica-{name}")
            port = free_port()
            gateways.append(
                stack.enter_context(
                    serve_config(_config(root, port, idp, redis_server.url), port, root / "state")
                )
            )
        yield gateways[0], gateways[1]


def _client(gw: Gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=token, max_retries=0, timeout=60)


def test_a_tenant_limit_holds_across_replicas(idp: LocalIdp, replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    token = idp.access_token(idp.register_client("shared-svc", tenant="shared", roles=["llm-users"]))
    with _client(a, token) as on_a, _client(b, token) as on_b:
        on_a.models.list()
        on_b.models.list()
        on_a.models.list()  # the third of rpm 3, counted across both replicas
        with pytest.raises(openai.RateLimitError) as limited:
            on_b.models.list()
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_redis_down_fails_closed_on_every_replica(
    idp: LocalIdp, replicas: tuple[Gateway, Gateway], redis_server: RedisServer
) -> None:
    token = idp.access_token(idp.register_client("outage-svc", tenant="shared-outage", roles=["llm-users"]))
    redis_server.stop()
    try:
        for gw in replicas:
            with _client(gw, token) as client, pytest.raises(openai.InternalServerError) as down:
                client.models.list()
            assert down.value.status_code == 503
            assert down.value.code == "limits_unavailable"
    finally:
        redis_server.start()
