"""Worker isolation as an operator sees it: /admin/workers and `llmos sandbox check`."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the layers are Linux only")


def test_admin_workers_shows_each_layer_of_the_running_worker(gateway: Gateway) -> None:
    with gateway.http() as http:
        r = http.get("/admin/workers", headers={"authorization": f"Bearer {gateway.admin_key}"})
        assert r.status_code == 200, r.text
        demo = r.json()["workers"]["demo"]
        assert demo["state"] == "ready" and isinstance(demo["pid"], int)
        layers = {layer["name"]: layer for layer in demo["isolation"]["layers"]}
        assert layers["filesystem"]["applied"] and layers["seccomp"]["applied"]
        assert layers["network"]["applied"] and layers["no_new_privs"]["applied"]
        if os.geteuid() == 0:
            assert layers["uid"]["status"] == "applied"
        user = gateway.create_key("sandbox-e2e-user", "user")
        assert http.get("/admin/workers", headers={"authorization": f"Bearer {user}"}).status_code == 403


def test_sandbox_check_prints_host_support_and_a_real_workers_report(gateway: Gateway) -> None:
    out = gateway.cli("sandbox", "check", "--json")
    doc = json.loads(out.stdout)
    host = {h["layer"]: h["supported"] for h in doc["host"]}
    got = {layer["name"]: layer["status"] in ("applied", "not_needed") for layer in doc["worker"]["layers"]}
    assert host == got  # every layer the host offers was applied (or not needed), and only those
    assert doc["error"] is None
    text = gateway.cli("sandbox", "check").stdout
    assert "host support:" in text and "an echo worker got:" in text and "filesystem" in text
