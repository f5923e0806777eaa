"""Routing and model visibility obligations on a gateway with two models."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e

POLICIES = Path(__file__).resolve().parents[2] / "policies"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("routing")
    policies = root / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("__*"))
    data = json.loads((policies / "data.json").read_text())
    data["llmos"]["config"]["routes"] = {"big": "small"}  # every request for "big" is served by "small"
    data["llmos"]["config"]["roles"]["contractor"] = {"models": ["small"], "max_tokens": 64}
    (policies / "data.json").write_text(json.dumps(data))
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npolicy: {{dir: policies, run_tests_on_load: false}}\n"
        "models:\n"
        "  - {name: small, path: state/models/demo, threads: 1, labels: ['tenant:acme']}\n"
        "  - {name: big, path: state/models/demo, threads: 1}\n"
        "  - {name: demo, path: state/models/demo, threads: 1}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def test_a_routed_request_is_served_and_decided_for_the_routed_model(two_models: Gateway) -> None:
    # admin is of tenant "default": "small" serves tenant acme only, so the routed request is denied.
    with pytest.raises(openai.PermissionDeniedError) as err:
        two_models.client().chat.completions.create(model="big", messages=HI, max_tokens=2)
    assert err.value.code == "tenant_not_permitted"
    acme = two_models.create_key("acme-user", "user")  # tenant acme
    resp = two_models.client(acme).chat.completions.create(model="big", messages=HI, max_tokens=2)
    assert resp.model == "small"


def test_allowed_models_limit_what_is_listed_and_used(two_models: Gateway) -> None:
    contractor = two_models.create_key("contractor-1", "contractor")
    client = two_models.client(contractor)
    listed = [m.id for m in client.models.list().data]
    assert listed == ["small"]
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="demo", messages=HI, max_tokens=2)
    assert err.value.code == "model_not_permitted"
