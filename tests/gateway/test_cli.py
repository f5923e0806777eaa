from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.audit.keys import load_private_key
from gateway.audit.log import AuditLog
from gateway.cli import main
from gateway.config import Config
from gateway.keys import KEY_PREFIX
from gateway.policy.bundle import load_bundle
from gateway.policy.testcache import PassedTests
from gateway.state import InitResult, open_key_store
from gateway.types import AuditRecord

KEY_LINE = re.compile(r"^sk-llmos-[0-9a-f]{16}-[A-Za-z0-9_-]{32,64}\n$")
REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _record(n: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{n}",
        time="2025-01-01T00:00:00Z",
        principal_id="key:0123456789abcdef",
        tenant="acme",
        endpoint="chat.completions",
        model="tiny",
        decision="allow",
        status=200,
    )


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["keys", "create", *args]) == 0
    return capsys.readouterr().out.strip()


# --- keys -------------------------------------------------------------------------------------


def test_keys_create_prints_only_the_key_on_stdout(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["keys", "create", "--name", "alice", "--role", "user", "--tenant", "acme", "--rpm", "10"])

    out, err = capsys.readouterr()
    assert code == 0
    assert KEY_LINE.match(out)
    key = out.strip()
    assert key not in err
    info = open_key_store(state_config).authenticate(key)
    assert info is not None
    assert (info.name, info.role, info.tenant, info.rpm, info.expires_at) == (
        "alice",
        "user",
        "acme",
        10,
        None,
    )
    assert f"created key alice (id {info.id}, role user, tenant acme)" in err


def test_keys_create_defaults_to_the_default_tenant(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _create(capsys, "--name", "bob", "--role", "auditor")

    info = open_key_store(state_config).authenticate(key)
    assert info is not None
    assert (info.tenant, info.role, info.rpm) == ("default", "auditor", None)


def test_keys_create_with_expiry(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _create(capsys, "--name", "temp", "--role", "user", "--expires-in-days", "2")

    info = open_key_store(state_config).authenticate(key)
    assert info is not None
    assert info.expires_at is not None


def test_keys_create_with_zero_days_does_not_make_a_never_expiring_key(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["keys", "create", "--name", "zero", "--role", "user", "--expires-in-days", "0"])

    out, _ = capsys.readouterr()
    if code == 0:  # accepted: the key must carry an expiry (already reached), not none at all
        assert open_key_store(state_config).authenticate(out.strip()) is None
        assert next(k for k in open_key_store(state_config).list() if k.name == "zero").expires_at is not None
    else:  # or refused as a usage error
        assert code == 2
        assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "admin", "--role", "user"], "already exists"),
        (["--name", "bad name", "--role", "user"], "key name"),
        (["--name", "x", "--role", "user", "--rpm", "0"], "rpm"),
        (["--name", "x", "--role", "user", "--tenant", "a/b"], "tenant"),
    ],
)
def test_keys_create_refusals_exit_2_and_print_no_key(
    initialised: InitResult, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["keys", "create", *args])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("llmos: error: ")
    assert message in err


def test_keys_create_malformed_role_is_an_error(
    initialised: InitResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "x", "--role", "Root Admin"]) == 2
    assert "role must be a lowercase name" in capsys.readouterr().err


def test_keys_create_accepts_roles_the_policy_defines(
    initialised: InitResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "c", "--role", "contractor"]) == 0
    assert capsys.readouterr().out.startswith("sk-llmos-")


def _stored_hashes(state_config: Config) -> list[str]:
    with sqlite3.connect(state_config.keys_db) as db:
        hashes = [r[0] for r in db.execute("SELECT key_hash FROM api_keys")]
    return hashes


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_keys_list_never_prints_keys_or_hashes(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    alice = _create(capsys, "--name", "alice", "--role", "user", "--tenant", "acme")
    assert main(["keys", "revoke", "alice"]) == 0
    capsys.readouterr()

    assert main(["keys", "list", *(["--json"] if as_json else [])]) == 0

    out, err = capsys.readouterr()
    secrets = [initialised.admin_key, alice, *_stored_hashes(state_config)]
    for secret in secrets:
        assert secret
        assert secret not in out
        assert secret not in err
    assert KEY_PREFIX not in out
    assert "alice" in out
    assert "admin" in out
    if as_json:
        rows = [json.loads(line) for line in out.splitlines()]
        assert sorted(r["name"] for r in rows) == ["admin", "alice"]
        assert {tuple(sorted(r)) for r in rows} == {
            (
                "created_at",
                "daily_tokens",
                "endpoints",
                "expires_at",
                "id",
                "last_used_at",
                "models",
                "name",
                "revoked_at",
                "role",
                "rpm",
                "status",
                "tenant",
                "tpm",
            )
        }
        status = {r["name"]: r["status"] for r in rows}
        assert status == {"admin": "active", "alice": "revoked"}
    else:
        lines = out.splitlines()
        assert len(lines) == 2
        assert any("alice" in line and "revoked" in line for line in lines)


def test_keys_revoke_by_name_and_by_id(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = _create(capsys, "--name", "alice", "--role", "user")
    bob = _create(capsys, "--name", "bob", "--role", "user")
    store = open_key_store(state_config)
    bob_id = next(k.id for k in store.list() if k.name == "bob")

    assert main(["keys", "revoke", "alice"]) == 0
    assert "revoked key alice" in capsys.readouterr().err
    assert main(["keys", "revoke", bob_id]) == 0
    out, err = capsys.readouterr()

    assert out == ""
    assert f"revoked key bob (id {bob_id})" in err
    assert store.authenticate(alice) is None
    assert store.authenticate(bob) is None
    assert store.authenticate(initialised.admin_key or "") is not None


def test_keys_revoke_unknown_exits_2(initialised: InitResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "revoke", "nobody"]) == 2
    assert "no key named or with id 'nobody'" in capsys.readouterr().err


def test_keys_on_an_uninitialised_home_says_to_run_init(
    llmos_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "list"]) == 2

    err = capsys.readouterr().err
    assert "Run `llmos init` first." in err
    assert not llmos_home.exists()


# --- init (with a config whose model is not the demo: no torch) --------------------------------


def test_init_with_a_config_prints_the_admin_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "llmos.yaml"
    cfg.write_text("state_dir: st\nmodels:\n  - name: tiny\n    path: models/tiny\n")

    assert main(["init", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert KEY_LINE.match(out)
    assert "created " in err
    assert "shown only this once" in err
    assert open_key_store(Config.load(cfg)).authenticate(out.strip()) is not None

    assert main(["init", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "already initialised" in err
    assert (tmp_path / "st" / "keys.db").is_file()
    assert not (tmp_path / "st" / "models").exists()
    # init ran the policy's tests once and remembered the pass: `serve` will not run them again
    digest = load_bundle(Config.load(cfg).policy_dir).digest
    assert PassedTests(tmp_path / "st" / "policy-tests.json").known(digest)


def test_init_without_an_admin_key_prints_nothing_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "llmos.yaml"
    cfg.write_text("state_dir: st\nmodels: []\n")

    assert main(["init", "--no-admin-key", "--config", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "created " in err and "Admin API key" not in err
    store = open_key_store(Config.load(cfg))
    assert store.list() == []
    # The operator creates keys afterwards (kubectl exec ... llmos keys create)
    assert main(["keys", "create", "--config", str(cfg), "--name", "ops", "--role", "admin"]) == 0
    assert [k.name for k in store.list()] == ["ops"]


# --- policy test -------------------------------------------------------------------------------


def test_policy_test_passes_on_the_default_policy(
    initialised: InitResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test"]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(line.startswith("PASS  ") and "_test.rego: test_" in line for line in lines[:-1])
    assert len(lines) - 1 >= 25
    assert lines[-1] == f"{len(lines) - 1} passed, 0 failed"


def test_policy_test_with_an_explicit_dir(
    initialised: InitResult, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test", str(REPO_POLICIES)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("passed, 0 failed")


def _policies_with(tmp_path: Path, name: str, source: str) -> Path:
    pol = tmp_path / "pol"
    shutil.copytree(REPO_POLICIES, pol, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    (pol / name).write_text(source)
    return pol


def test_policy_test_fails_on_a_failing_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pol = _policies_with(
        tmp_path,
        "broken_test.rego",
        "package llmos.broken_test\nimport rego.v1\ntest_wrong if {\n\t1 == 2\n}\n",
    )

    code = main(["policy", "test", str(pol)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert "FAIL  broken_test.rego: test_wrong  (rule is not true)" in lines
    assert "PASS  authz_test.rego: test_user_may_chat" in lines
    assert re.fullmatch(r"\d+ passed, 1 failed", lines[-1])


def test_policy_test_fails_on_a_test_file_with_a_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = _policies_with(
        tmp_path,
        "broken_test.rego",
        "package llmos.broken_test\nimport rego.v1\ntest_unclosed if {\n\t1 ==\n",
    )

    code = main(["policy", "test", str(pol)])

    out, err = capsys.readouterr()
    assert code == 1
    assert "passed, 0 failed" not in out
    assert err.startswith("llmos: error: broken_test.rego: ")


def test_policy_test_on_a_missing_dir_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "test", str(tmp_path / "nope")]) == 1
    assert "policy directory does not exist" in capsys.readouterr().err


# --- audit verify ------------------------------------------------------------------------------


def _fill_audit(config: Config, n: int) -> None:
    with AuditLog(config.audit_db, load_private_key(config.signing_key)) as log:
        for i in range(1, n + 1):
            log.append(_record(i))


def test_audit_verify_ok(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 3)

    assert main(["audit", "verify"]) == 0

    assert re.match(
        r"^OK: 3 entries verified; head [0-9a-f]{64}; Merkle root [0-9a-f]{64}; 1 signed checkpoints"
        r" and the signed head \(origin llmos\.audit/[0-9a-f]{16}\); signing keys sha256:[0-9a-f]{64}\n$",
        capsys.readouterr().out,
    )


def test_audit_checkpoint_prints_a_note_that_verify_accepts(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 2)
    with sqlite3.connect(state_config.audit_db) as db:  # a backup of the signed head at 2 entries
        old_head = db.execute("SELECT value FROM audit_meta WHERE key = 'head'").fetchone()[0]
    db.close()
    with AuditLog(state_config.audit_db, load_private_key(state_config.signing_key)) as log:
        log.append(_record(3))
    assert main(["audit", "checkpoint"]) == 0
    note = capsys.readouterr().out
    assert note.splitlines()[1:2] == ["3"]  # origin, size, root, blank line, signature
    kept = tmp_path / "kept.checkpoint"
    kept.write_text(note)
    with sqlite3.connect(state_config.audit_db) as db:  # cut the log and its stored checkpoints
        db.execute("DELETE FROM audit_entries WHERE seq = 3")
        db.execute("DELETE FROM audit_checkpoints")
    db.close()
    assert main(["audit", "verify"]) == 1  # the signed head in the file covers 3 entries
    assert "signed head: it covers 3 entries but the log holds 2" in capsys.readouterr().out
    with sqlite3.connect(state_config.audit_db) as db:  # ...so the attacker puts the old one back
        db.execute("UPDATE audit_meta SET value = ? WHERE key = 'head'", (old_head,))
    db.close()
    assert main(["audit", "verify"]) == 0  # the file alone cannot tell
    capsys.readouterr()
    assert main(["audit", "verify", "--checkpoint", str(kept)]) == 1
    assert "truncated" in capsys.readouterr().out


def test_audit_export_then_verify_the_bundle(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 4)  # closing the log signs a checkpoint over all four
    out = tmp_path / "bundle"
    assert main(["audit", "export", "--out", str(out)]) == 0
    assert "exported 4 entries" in capsys.readouterr().out
    pub = str(state_config.public_key)
    assert main(["audit", "verify", str(out), "--public-key", pub]) == 0
    assert capsys.readouterr().out.startswith(
        "OK: 4 entries (seq 1-4) verified against the signed checkpoint of 4"
    )
    assert main(["audit", "verify", str(out)]) == 0  # the bundle's own key, with a warning
    assert "no --public-key given" in capsys.readouterr().err
    assert main(["audit", "verify", str(out), "--public-key", pub, "--expect-seq", "1-4"]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--public-key", pub, "--expect-seq", "2-4"]) == 1
    assert "expected 2-4" in capsys.readouterr().out
    assert main(["audit", "verify", str(out), "--public-key", pub, "--expect-seq", "four"]) == 2
    assert "--expect-seq 'four': write it as A-B" in capsys.readouterr().err
    (out / "checkpoint.txt").write_text("tampered\n")
    assert main(["audit", "verify", str(out), "--public-key", pub]) == 1
    assert capsys.readouterr().out.startswith("FAILED: ")


def test_audit_roll_then_verify_both_segments(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 3)
    assert main(["audit", "roll", "--archive", str(tmp_path / "archive")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("archived 3 entries of llmos.audit/")
    archived = next((tmp_path / "archive").glob("*.db"))
    with AuditLog(state_config.audit_db, load_private_key(state_config.signing_key)) as log:
        log.append(_record(9))
    assert main(["audit", "verify", "--previous-segment", str(archived)]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 entries verified")
    assert main(["audit", "verify", "--db", str(archived)]) == 0


def test_audit_verify_empty_log(initialised: InitResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK: 0 entries verified")


def test_audit_verify_names_the_tampered_entry(
    initialised: InitResult, state_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 4)
    with sqlite3.connect(state_config.audit_db) as db:
        db.execute("UPDATE audit_entries SET body = replace(body, 'acme', 'evil') WHERE seq = 3")
    db.close()

    assert main(["audit", "verify"]) == 1

    out = capsys.readouterr().out
    assert out.startswith("FAILED: audit entry seq 3 ")
    assert "req-3" in out


def test_audit_verify_with_explicit_paths(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill_audit(state_config, 2)
    db = tmp_path / "copy.db"
    shutil.copy(state_config.audit_db, db)
    pub = tmp_path / "pub.pem"
    shutil.copy(state_config.public_key, pub)

    assert main(["audit", "verify", "--db", str(db), "--public-key", str(pub)]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 entries verified")


def test_audit_verify_with_the_wrong_public_key_fails(
    initialised: InitResult, state_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.audit.keys import generate_signing_key

    _fill_audit(state_config, 1)
    generate_signing_key(tmp_path / "other.pem", tmp_path / "other.pub.pem")

    assert main(["audit", "verify", "--public-key", str(tmp_path / "other.pub.pem")]) == 1
    assert "no signature by a known key" in capsys.readouterr().out


def test_audit_verify_without_a_database_exits_2(
    llmos_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify"]) == 2
    assert "no audit database here" in capsys.readouterr().err


# --- configuration errors and help -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  port: 99999\n", "server.port: "),
        ("a: [\n", "not valid YAML at line 2"),
        ("bogus: 1\n", "bogus: "),
    ],
)
@pytest.mark.parametrize(
    "argv", [["keys", "list"], ["init"], ["audit", "verify"], ["policy", "test"]], ids=lambda a: "-".join(a)
)
def test_a_config_error_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str, argv: list[str]
) -> None:
    cfg = tmp_path / "llmos.yaml"
    cfg.write_text(text)

    code = main([*argv, "--config", str(cfg)])

    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith(f"llmos: error: {cfg}: {message}")


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"

    assert main(["keys", "list", "--config", str(missing)]) == 2
    assert f"{missing}: cannot read the configuration file" in capsys.readouterr().err


HELP = [
    ([], "llmos: an OpenAI-compatible gateway"),
    (["init"], "--config FILE"),
    (["serve"], "--port PORT"),
    (["keys"], "create"),
    (["keys", "create"], "--expires-in-days DAYS"),
    (["keys", "list"], "--json"),
    (["keys", "revoke"], "NAME|ID"),
    (["audit"], "verify"),
    (["audit", "verify"], "--public-key"),
    (["policy"], "test"),
    (["policy", "test"], "policy directory"),
]


@pytest.mark.parametrize(("argv", "text"), HELP, ids=[" ".join(a) or "llmos" for a, _ in HELP])
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str], text: str) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])

    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out.startswith("usage: llmos" + "".join(f" {a}" for a in argv))
    assert text in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: llmos" in capsys.readouterr().err


def test_policy_sign_writes_a_signature_the_gateway_accepts(initialised: InitResult, tmp_path: Path) -> None:
    from gateway.audit.keys import generate_signing_key, load_public_key
    from gateway.policy.bundle import load_bundle
    from gateway.policy.signing import verify_bundle

    generate_signing_key(tmp_path / "policy.pem", tmp_path / "policy.pub")
    policies = tmp_path / "policies"
    shutil.copytree(
        Path(__file__).resolve().parents[2] / "policies", policies, ignore=shutil.ignore_patterns("__*")
    )
    assert main(["policy", "sign", "--key", str(tmp_path / "policy.pem"), str(policies)]) == 0
    verify_bundle(load_bundle(policies), load_public_key(tmp_path / "policy.pub"))


@pytest.mark.parametrize(
    ("text", "message"), [("{not json", "line 1: not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_policy_eval_refuses_bad_input_files(
    initialised: InitResult, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "input.json"
    path.write_text(text)
    assert main(["policy", "eval", "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert "Traceback" not in err


def test_policy_replay_refuses_bad_times(initialised: InitResult, capsys: pytest.CaptureFixture[str]) -> None:
    policies = Path(__file__).resolve().parents[2] / "policies"
    assert main(["policy", "replay", "--candidate", str(policies), "--since", "last tuesday"]) == 2
    assert "--since/--until" in capsys.readouterr().err
