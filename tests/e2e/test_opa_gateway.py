"""The gateway with `policy.engine: opa`, in front of a fake OPA server (OPA's REST Data API
contract over the real policy library; no OPA binary can be installed here): decisions come
from it, and a slow or failing OPA denies with 503, never allows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from gateway.policy.bundle import load_bundle
from tests.e2e.conftest import Gateway, free_port, serve_config
from tests.gateway.policy.fake_opa import FakeOpaServer

pytestmark = pytest.mark.e2e

POLICIES = Path(__file__).resolve().parents[2] / "policies"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def opa() -> Iterator[FakeOpaServer]:
    with FakeOpaServer(load_bundle(POLICIES)) as server:
        yield server


@pytest.fixture(scope="module")
def gateway_with_opa(opa: FakeOpaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("opa-gw")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        f"policy:\n  engine: opa\n  opa: {{url: '{opa.url}', timeout_s: 0.5}}\n"
        "models:\n  - name: demo\n    path: state/models/demo\n    threads: 1\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def test_decisions_come_from_opa(gateway_with_opa: Gateway, opa: FakeOpaServer) -> None:
    opa.settings.reset()
    client = gateway_with_opa.client()
    assert client.chat.completions.create(model="demo", messages=HI, max_tokens=2).choices
    auditor = gateway_with_opa.create_key("opa-auditor", "auditor")
    with pytest.raises(openai.PermissionDeniedError) as err:
        gateway_with_opa.client(auditor).chat.completions.create(model="demo", messages=HI, max_tokens=2)
    assert err.value.code == "role_not_permitted"
    assert opa.settings.data_requests >= 3  # input and output decisions for the first, input for the second


@pytest.mark.parametrize(("sleep_s", "fault"), [(2.0, None), (0.0, "http_500"), (0.0, "malformed")])
def test_a_slow_or_failing_opa_denies(
    gateway_with_opa: Gateway, opa: FakeOpaServer, sleep_s: float, fault: str | None
) -> None:
    opa.settings.reset()
    opa.settings.sleep_s = sleep_s
    opa.settings.fault = fault  # type: ignore[assignment]
    try:
        with pytest.raises(openai.APIStatusError) as err:
            gateway_with_opa.client().chat.completions.create(model="demo", messages=HI, max_tokens=2)
    finally:
        opa.settings.reset()
    if fault == "malformed":
        assert (err.value.status_code, err.value.code) == (403, "policy_malformed")
    else:
        assert (err.value.status_code, err.value.code) == (503, "policy_unavailable")
    assert gateway_with_opa.client().chat.completions.create(model="demo", messages=HI, max_tokens=2).choices
