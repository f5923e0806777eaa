"""A running `llmos serve` picks up policy edits without a restart, keeps serving under the
previous policy while the policy on disk is broken, and reloads on SIGHUP."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "hi"}]
REFUSED = "refused; still serving policy"
BROKEN = "package llmos.extra\nimport rego.v1\n\nx if {\n\t1 ==\n}\n"
FIXED = "package llmos.extra\nimport rego.v1\n\nx if {\n\t1 == 1\n}\n"


def outcome(gw: Gateway, key: str) -> str:
    """The outcome of one chat request: "ok", or the code of its 403."""
    try:
        gw.client(key).chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
    except openai.PermissionDeniedError as exc:
        return str(exc.code)
    return "ok"


def wait_until(gw: Gateway, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or gw.proc.poll() is not None:
            raise AssertionError(f"{what}: not seen within {timeout}s\n{gw.log_path.read_text()}")
        time.sleep(0.2)


def set_user_models(policies: Path, models: list[str]) -> None:
    path = policies / "data.json"
    data = json.loads(path.read_text())
    data["llmos"]["config"]["roles"]["user"]["models"] = models
    path.write_text(json.dumps(data, indent=2))


def test_policy_edits_are_picked_up_and_broken_ones_refused(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "llmos.yaml"
    # run_tests_on_load: false, since the library's own Rego tests pin the roles in its data.json.
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npolicy: {{run_tests_on_load: false}}\n"
        "models:\n  - name: tiny\n    path: state/models/demo\n    threads: 1\n"
    )
    policies = tmp_path / "state" / "policies"
    with serve_config(config, port, tmp_path / "state") as gw:
        log, proc = gw.log_path, gw.proc
        user = gw.create_key("reload-user", "user")
        assert outcome(gw, user) == "ok"

        # A valid edit: role "user" may use no model.
        set_user_models(policies, [])
        wait_until(gw, "the edit denies", lambda: outcome(gw, user) == "model_not_permitted")
        assert " -> sha256:" in log.read_text()

        # A broken module is refused, with file and line; the previous policy keeps deciding,
        # even after a data.json edit that would allow the request again.
        (policies / "zz_broken.rego").write_text(BROKEN)
        wait_until(gw, "the broken module refused", lambda: log.read_text().count(REFUSED) >= 1)
        assert "zz_broken.rego:5:4: Invalid boolean operator" in log.read_text()
        set_user_models(policies, ["*"])
        wait_until(gw, "the second refusal", lambda: log.read_text().count(REFUSED) >= 2)
        assert outcome(gw, user) == "model_not_permitted"

        # Fixed: the module and the data.json edit are picked up together.
        (policies / "zz_broken.rego").write_text(FIXED)
        wait_until(gw, "the fix allows", lambda: outcome(gw, user) == "ok")

        # SIGHUP reloads (here: nothing changed) and does not stop the server.
        proc.send_signal(signal.SIGHUP)
        wait_until(gw, "the SIGHUP reload", lambda: "unchanged (SIGHUP)" in log.read_text())
        assert outcome(gw, user) == "ok"
    text = log.read_text()
    assert gw.exit_code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in text
    assert "Traceback" not in text
    assert "Task was destroyed" not in text
    assert gw.worker_pids() == []
