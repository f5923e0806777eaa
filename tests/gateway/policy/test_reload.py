"""PolicyReloader driven directly over a tmp copy of policies/ and a holder with a ``.policy``.

A reload swaps in a new engine only when the new policy loads, verifies, passes its tests and
compiles; otherwise the old engine keeps deciding and the error names file and line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.keys import generate_signing_key
from gateway.config import Config
from gateway.errors import PolicyError
from gateway.policy.bundle import load_bundle
from gateway.policy.engine import PolicyEngine, RegoEngine
from gateway.policy.input import ModelInfo, RequestSummary, input_document
from gateway.policy.reload import PolicyReloader, load_policy, rego_error_locations
from gateway.policy.signing import sign_bundle
from gateway.types import Decision, Principal

POLICIES = Path(__file__).resolve().parents[3] / "policies"
WEEKDAY_NOON = "2026-11-30T12:00:00.000+00:00"
BROKEN = "package llmos.extra\nimport rego.v1\n\n# ünïcode before the error\nx if {\n\t1 ==\n}\n"
FAILING_TEST = "\ntest_always_fails if {\n\t1 == 2\n}\n"

pytestmark = pytest.mark.anyio


@dataclass
class Holder:
    policy: PolicyEngine


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    return root


def make_config(tmp_path: Path, policy_dir: Path, **policy: Any) -> Config:
    return Config.model_validate(
        {"state_dir": str(tmp_path / "state"), "policy": {"dir": str(policy_dir), **policy}},
        context={"base_dir": tmp_path},
    )


@pytest.fixture
def config(tmp_path: Path, policy_dir: Path) -> Config:
    # The library's own Rego tests assume its data.json; edits below change it on purpose.
    return make_config(tmp_path, policy_dir, watch=False, run_tests_on_load=False)


def user_decision(engine: PolicyEngine) -> Decision:
    principal = Principal(
        id="key:0123456789abcdef", name="u", tenant="acme", roles=("user",), auth_method="api_key"
    )
    document = input_document(
        principal,
        RequestSummary(endpoint="chat.completions", model="demo", max_tokens=16, message_count=1),
        time=WEEKDAY_NOON,
        model=ModelInfo(name="demo"),
    )
    return engine.decide(document)


def set_user_models(policy_dir: Path, models: list[str]) -> None:
    path = policy_dir / "data.json"
    data = json.loads(path.read_text())
    data["llmos"]["config"]["roles"]["user"]["models"] = models
    path.write_text(json.dumps(data, indent=2))


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def test_a_valid_edit_is_swapped_in(
    config: Config, policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder(load_policy(config))
    old = holder.policy
    reloader = PolicyReloader(config, holder)
    assert user_decision(old).allow

    set_user_models(policy_dir, [])
    with caplog.at_level(logging.INFO, logger="llmos.gateway"):
        assert await reloader.reload("test") is True

    assert holder.policy is not old
    assert reloader.digest == holder.policy.digest == load_bundle(policy_dir).digest
    assert (reloader.reloads, reloader.failures, reloader.last_error) == (1, 0, None)
    decision = user_decision(holder.policy)
    assert not decision.allow
    assert decision.reasons[0].code == "model_not_permitted"
    assert user_decision(old).allow  # the old engine is untouched (requests in flight finish on it)
    assert f"policy {old.digest} -> {holder.policy.digest} (test)" in caplog.messages


async def test_an_unchanged_policy_is_not_swapped(config: Config) -> None:
    holder = Holder(load_policy(config))
    old = holder.policy
    reloader = PolicyReloader(config, holder)

    assert await reloader.reload() is True

    assert holder.policy is old
    assert (reloader.reloads, reloader.failures) == (0, 0)


async def test_a_syntax_error_is_refused_with_file_and_line(
    config: Config, policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder(load_policy(config))
    old = holder.policy
    reloader = PolicyReloader(config, holder)

    (policy_dir / "extra.rego").write_text(BROKEN)
    set_user_models(policy_dir, [])  # would deny, if it were applied
    with caplog.at_level(logging.INFO, logger="llmos.gateway"):
        assert await reloader.reload("test") is False

    assert holder.policy is old
    assert user_decision(holder.policy).allow
    assert (reloader.reloads, reloader.failures) == (0, 1)
    assert reloader.last_error is not None
    assert "extra.rego:6:4: Invalid boolean operator" in reloader.last_error
    assert "rego-errorseq" not in reloader.last_error  # rego-cpp's s-expression is translated
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "extra.rego:6:4" in errors[0].getMessage()
    assert old.digest in errors[0].getMessage()

    (policy_dir / "extra.rego").unlink()  # fixed: the data.json edit now applies
    assert await reloader.reload("test") is True
    assert reloader.last_error is None
    assert (reloader.reloads, reloader.failures) == (1, 1)
    assert not user_decision(holder.policy).allow


async def test_a_failing_rego_test_is_refused(tmp_path: Path, policy_dir: Path) -> None:
    config = make_config(tmp_path, policy_dir, watch=False, run_tests_on_load=True)
    holder = Holder(load_policy(config))
    old = holder.policy
    reloader = PolicyReloader(config, holder)
    tests = policy_dir / "authz_test.rego"
    tests.write_text(tests.read_text() + FAILING_TEST)

    assert await reloader.reload() is False

    assert holder.policy is old
    assert reloader.last_error is not None
    assert "policy tests failed: authz_test.rego:test_always_fails" in reloader.last_error


async def test_invalid_json_is_refused_with_its_line(config: Config, policy_dir: Path) -> None:
    holder = Holder(load_policy(config))
    reloader = PolicyReloader(config, holder)
    (policy_dir / "data.json").write_text('{\n  "llmos": {\n    "config": ,\n  }\n}\n')

    assert await reloader.reload() is False

    assert reloader.last_error is not None
    assert "data.json: line 3: invalid JSON" in reloader.last_error


async def test_an_unsigned_change_is_refused(tmp_path: Path, policy_dir: Path) -> None:
    private, public = tmp_path / "policy.pem", tmp_path / "policy.pub.pem"
    generate_signing_key(private, public)
    sign_bundle(policy_dir, private)
    config = make_config(tmp_path, policy_dir, watch=False, run_tests_on_load=False, public_key=str(public))
    holder = Holder(load_policy(config))
    old = holder.policy
    reloader = PolicyReloader(config, holder)

    set_user_models(policy_dir, [])
    assert await reloader.reload() is False
    assert holder.policy is old
    assert reloader.last_error is not None
    assert "does not match policy" in reloader.last_error

    digest = sign_bundle(policy_dir, private)
    assert await reloader.reload() is True
    assert reloader.digest == digest


async def test_an_unexpected_loader_error_is_counted_not_raised(config: Config) -> None:
    def explode(_: Config) -> PolicyEngine:
        raise RuntimeError("boom")

    holder = Holder(load_policy(config))
    reloader = PolicyReloader(config, holder, loader=explode)

    assert await reloader.reload() is False
    assert reloader.last_error == "RuntimeError: boom"


async def test_sighup_triggers_a_reload(config: Config, policy_dir: Path) -> None:
    holder = Holder(load_policy(config))
    reloader = PolicyReloader(config, holder)
    before = signal.getsignal(signal.SIGHUP)
    await reloader.start()
    try:
        assert reloader.sighup
        assert not reloader.watching  # watch: false; only the signal reloads
        set_user_models(policy_dir, [])
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: reloader.reloads == 1)
        assert not user_decision(holder.policy).allow
    finally:
        await reloader.stop()
    assert not reloader.sighup
    assert signal.getsignal(signal.SIGHUP) == before


async def test_a_change_in_the_directory_is_picked_up(tmp_path: Path, policy_dir: Path) -> None:
    config = make_config(tmp_path, policy_dir, run_tests_on_load=False)
    holder = Holder(load_policy(config))
    reloader = PolicyReloader(config, holder)
    await reloader.start()
    try:
        assert reloader.watching
        set_user_models(policy_dir, [])
        await wait_for(lambda: reloader.reloads == 1)
        assert not user_decision(holder.policy).allow

        (policy_dir / "extra.rego").write_text(BROKEN)
        await wait_for(lambda: reloader.failures == 1)
        assert reloader.last_error is not None
        assert "extra.rego:6:4" in reloader.last_error

        (policy_dir / "extra.rego").write_text("package llmos.extra\nimport rego.v1\nx := 1\n")
        await wait_for(lambda: reloader.reloads == 2)
        assert reloader.last_error is None
    finally:
        await reloader.stop()
    assert not reloader.watching


async def test_an_edit_made_before_start_is_caught_up(tmp_path: Path, policy_dir: Path) -> None:
    config = make_config(tmp_path, policy_dir, run_tests_on_load=False)
    holder = Holder(load_policy(config))
    reloader = PolicyReloader(config, holder)
    set_user_models(policy_dir, [])  # between loading and serving (workers start in between)

    await reloader.start()
    try:
        await wait_for(lambda: reloader.reloads == 1)
    finally:
        await reloader.stop()
    assert not user_decision(holder.policy).allow


async def test_stop_abandons_a_reload_in_progress(config: Config) -> None:
    holder = Holder(load_policy(config))
    old = holder.policy
    started, release = threading.Event(), threading.Event()

    def slow(cfg: Config) -> PolicyEngine:
        started.set()
        release.wait(10)
        return load_policy(cfg)

    reloader = PolicyReloader(config, holder, loader=slow)
    await reloader.start()
    reloader.request_reload("test")
    await asyncio.to_thread(started.wait, 10)
    await reloader.stop()
    release.set()

    assert holder.policy is old
    assert reloader.reloads == 0


@dataclass
class FakeOpa:
    digest: str = "opa-sha256:old"
    has_output_policy: bool = False
    refreshed: int = 0

    def decide(self, policy_input: dict[str, Any], phase: Any = "input") -> Decision:
        return Decision(allow=True)

    def refresh(self) -> str:
        self.refreshed += 1
        self.digest = "opa-sha256:new"
        return self.digest


async def test_opa_reload_refreshes_the_digest(tmp_path: Path, policy_dir: Path) -> None:
    def no_loader(_: Config) -> PolicyEngine:
        raise AssertionError("an OPA reload refreshes; it builds no engine")

    config = make_config(tmp_path, policy_dir, engine="opa")
    engine = FakeOpa()
    holder = Holder(engine)
    reloader = PolicyReloader(config, holder, loader=no_loader)

    assert await reloader.reload() is True

    assert holder.policy is engine
    assert (engine.refreshed, reloader.digest, reloader.reloads) == (1, "opa-sha256:new", 1)


def test_startup_errors_name_file_and_line(config: Config, policy_dir: Path) -> None:
    (policy_dir / "extra.rego").write_text(BROKEN)

    with pytest.raises(
        PolicyError, match=r"policy does not compile: extra\.rego:6:4: Invalid boolean operator"
    ):
        load_policy(config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "x.rego: (rego-errorseq\n  (error 6:x.rego|15|1\n    (errormsg 16:this is unclosed)\n"
            "    (errorast |15|1))\n  (error 6:x.rego|0|7\n    (errormsg 16:this is unclosed)))\n",
            ["x.rego:1:1: this is unclosed", "x.rego:2:6: this is unclosed"],
        ),
        ("Errors:\nunsafe var\n-- sub/y.rego:3:9\n  y > 1\n", ["sub/y.rego:3:9: unsafe var"]),
        ("(error 9:other.txt|3|1 (errormsg 3:bad))", ["other.txt: bad"]),
        ("policy evaluation failed", []),
    ],
)
def test_rego_error_locations(tmp_path: Path, text: str, expected: list[str]) -> None:
    (tmp_path / "x.rego").write_text("package x\nx := {\n")
    (tmp_path / "y.rego").write_text("package y\n")

    assert rego_error_locations(load_bundle(tmp_path), text) == expected


def test_the_decision_cache_follows_config_and_says_why_it_is_off(
    tmp_path: Path, policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = load_policy(make_config(tmp_path, policy_dir, run_tests_on_load=False, decision_cache=8))
    assert isinstance(engine, RegoEngine) and engine.cache.enabled
    assert user_decision(engine) is user_decision(engine)  # the second one came from the cache

    off = load_policy(make_config(tmp_path, policy_dir, run_tests_on_load=False, decision_cache=0))
    assert isinstance(off, RegoEngine) and not off.cache.enabled

    (policy_dir / "zz_clock.rego").write_text(
        "package llmos.authz\nimport rego.v1\nnow_known if time.now_ns() > 0\n"
    )
    with caplog.at_level(logging.INFO, logger="llmos.gateway"):
        impure = load_policy(make_config(tmp_path, policy_dir, run_tests_on_load=False))
    assert isinstance(impure, RegoEngine) and not impure.cache.enabled
    assert "policy decision cache off: the policy calls time.now_ns" in caplog.messages
