"""Two models larger together than the memory budget serve alternating traffic through a real
gateway and the openai client; the LRU swaps show in /admin/models."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import LLMOS, Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e
MiB = 2**20


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("pool")
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        f"devices: {{cpu_budget_bytes: {1000 * MiB}}}\n"
        "models:\n"
        f"  - {{name: left, kind: echo, load: on_demand, memory_bytes: {600 * MiB}}}\n"
        f"  - {{name: right, kind: echo, load: on_demand, memory_bytes: {600 * MiB}}}\n"
        f"  - {{name: always, kind: echo, memory_bytes: {300 * MiB}}}\n"
        f"  - {{name: huge, kind: echo, load: on_demand, memory_bytes: {4000 * MiB}}}\n"  # fits nowhere
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def status(gateway: Gateway) -> dict[str, Any]:
    with gateway.http() as http:
        r = http.get("/admin/models", headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def ask(gateway: Gateway, model: str, text: str) -> str:
    reply = gateway.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=16
    )
    return reply.choices[0].message.content or ""


def test_alternating_traffic_swaps_the_two_models_by_lru(pooled: Gateway) -> None:
    before = status(pooled)
    assert before["models"]["left"]["state"] == "unloaded"  # on demand: nothing loaded yet
    assert before["models"]["always"]["state"] == "ready" and before["models"]["always"]["pinned"]
    assert before["devices"][0]["budget_bytes"] == 1000 * MiB
    for n in range(3):
        assert ask(pooled, "left", f"left {n}") == f"left {n}"
        now = status(pooled)
        assert now["models"]["left"]["state"] == "ready" and now["models"]["right"]["state"] == "unloaded"
        assert ask(pooled, "right", f"right {n}") == f"right {n}"
        now = status(pooled)
        assert now["models"]["right"]["state"] == "ready" and now["models"]["left"]["state"] == "unloaded"
        assert ask(pooled, "always", f"always {n}") == f"always {n}"
    after = status(pooled)
    assert after["evictions"] >= 5
    assert after["models"]["always"]["evictions"] == 0  # pinned
    assert after["devices"][0]["used_bytes"] == 900 * MiB
    assert set(after["devices"][0]["models"]) == {"right", "always"}
    assert after["models"]["left"]["last_used"] < after["models"]["right"]["last_used"]


def test_load_and_unload_by_hand_and_only_admins_see_it(pooled: Gateway) -> None:
    admin = {"authorization": f"Bearer {pooled.admin_key}"}
    with pooled.http() as http:
        r = http.post("/admin/models/left/load", headers=admin)
        assert r.status_code == 200 and r.json()["state"] in ("loading", "ready"), r.text
        r = http.post("/admin/models/left/unload", headers=admin)
        assert r.status_code == 200 and r.json()["state"] == "unloaded"
        assert http.post("/admin/models/nope/load", headers=admin).status_code == 404
        user = pooled.create_key("pool-user", "user")
        assert http.get("/admin/models", headers={"authorization": f"Bearer {user}"}).status_code == 403


def test_the_cli_shows_status_and_loads_through_the_admin_api(pooled: Gateway) -> None:
    env = {**pooled.env(), "LLMOS_API_KEY": pooled.admin_key}

    def llmos(*args: str) -> str:
        done = subprocess.run(
            [LLMOS, "models", *args, "--url", pooled.base_url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert llmos("unload", "left").strip() == "left: unloaded"
    assert llmos("load", "left").strip() in ("left: loading", "left: ready")
    out = llmos("status")
    assert out.startswith("cpu: ") and "of 1000 MiB" in out
    assert "always: ready pinned, 300 MiB per replica on cpu; replicas 1/1; last used " in out
    assert "left: " in out and "right: " in out


def test_a_model_larger_than_every_device_is_refused_with_an_audit_entry(pooled: Gateway) -> None:
    """The gateway started and serves the others; the huge model answers 503 placement_failed
    in the OpenAI envelope, loads nothing, and its refusal is in the audit trail."""
    with pooled.http() as http:
        r = http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {pooled.admin_key}"},
            json={"model": "huge", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "placement_failed" and "huge" in error["message"], error
    assert "retry-after" not in r.headers  # retrying cannot help
    model = status(pooled)["models"]["huge"]
    assert model["state"] == "refused" and model["replicas"] == 0 and model["loads"] == 0
    refused = [
        e
        for e in audit_reader.entries(pooled.home)
        if e["endpoint"] == "sandbox.worker" and e["model"] == "huge"
    ]
    assert refused and refused[0]["decision"] == "deny"
    assert "placement_failed" in refused[0]["reasons"]
    with pooled.http() as http:
        assert http.get("/readyz").status_code == 200  # an on-demand model does not count
