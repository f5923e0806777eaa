from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import DEMO_MODEL_NAME, Config
from gateway.errors import ConfigError


@pytest.fixture
def write_config(tmp_path: Path):
    def write(text: str, name: str = "llmos.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_defaults_are_derived_from_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = Config.embedded(state)

    assert config.state_dir == state
    assert config.keys_db == state / "keys.db"
    assert config.pepper_file == state / "secrets" / "api_key_pepper"
    assert config.policy_dir == state / "policies"
    assert config.audit_db == state / "audit.db"
    assert config.signing_key == state / "secrets" / "audit_signing_key.pem"
    assert config.public_key == state / "audit_signing_key.pub.pem"
    assert config.digest_key_file == state / "secrets" / "audit_digest_key"
    assert config.demo_model_dir == state / "models" / DEMO_MODEL_NAME
    assert [(m.name, m.path) for m in config.model_list] == [(DEMO_MODEL_NAME, state / "models" / "demo")]
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.policy.query == "data.llmos.authz.decision"
    assert config.policy.run_tests_on_load is True


def test_embedded_honours_llmos_home_from_environ(tmp_path: Path) -> None:
    config = Config.embedded(environ={"LLMOS_HOME": str(tmp_path / "home")})

    assert config.state_dir == tmp_path / "home"
    assert config.keys_db == tmp_path / "home" / "keys.db"


@pytest.mark.parametrize("environ", [{}, {"LLMOS_HOME": ""}], ids=["unset", "empty"])
def test_embedded_falls_back_to_dot_llmos_in_cwd(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "must-not-be-used"))

    config = Config.embedded(environ=environ)

    assert config.state_dir == tmp_path / ".llmos"


def test_embedded_relative_home_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    assert Config.embedded(environ={"LLMOS_HOME": "rel/home"}).state_dir == tmp_path / "rel" / "home"


def test_embedded_explicit_state_dir_wins_over_environ(tmp_path: Path) -> None:
    config = Config.embedded(tmp_path / "explicit", environ={"LLMOS_HOME": str(tmp_path / "env")})

    assert config.state_dir == tmp_path / "explicit"


def test_load_resolves_relative_paths_against_the_config_files_dir(
    write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write_config(
        "state_dir: st\n"
        "auth:\n  keys_db: k/keys.db\n"
        "policy:\n  dir: pol\n"
        "audit:\n  db: /abs/audit.db\n"
        "models:\n  - name: tiny\n    path: models/tiny\n"
    )

    config = Config.load(path)

    assert config.state_dir == tmp_path / "st"
    assert config.keys_db == tmp_path / "k" / "keys.db"
    assert config.policy_dir == tmp_path / "pol"
    assert config.audit_db == Path("/abs/audit.db")
    # left out: derived from the (resolved) state_dir
    assert config.pepper_file == tmp_path / "st" / "secrets" / "api_key_pepper"
    assert [(m.name, m.path) for m in config.model_list] == [("tiny", tmp_path / "models" / "tiny")]


def test_load_expands_home(write_config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "homedir"))

    config = Config.load(write_config("state_dir: ~/st\n"))

    assert config.state_dir == tmp_path / "homedir" / "st"


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comment"])
def test_empty_file_gives_defaults(write_config, text: str) -> None:
    config = Config.load(write_config(text))

    assert config.server.port == 8080
    assert [m.name for m in config.model_list] == [DEMO_MODEL_NAME]


def test_values_are_read(write_config) -> None:
    config = Config.load(
        write_config(
            "server:\n  host: 10.1.2.3\n  port: 9000\n  max_messages: 8\n  log_level: debug\n"
            "policy:\n  query: data.x.y\n  run_tests_on_load: false\n"
            "models:\n  - name: a\n    path: /m/a\n    default_max_tokens: 32\n  - name: b\n    path: /m/b\n"
        )
    )

    assert (config.server.host, config.server.port, config.server.max_messages) == ("10.1.2.3", 9000, 8)
    assert config.server.log_level == "debug"
    assert (config.policy.query, config.policy.run_tests_on_load) == ("data.x.y", False)
    assert [(m.name, m.default_max_tokens) for m in config.model_list] == [("a", 32), ("b", 256)]


def test_workers_spawner_defaults_to_exec(write_config) -> None:
    assert Config.load(write_config("")).workers.spawner == "exec"
    assert Config.load(write_config("workers: {spawner: fork_server}\n")).workers.spawner == "fork_server"


def test_model_kind_and_canary_file(write_config, tmp_path: Path) -> None:
    config = Config.load(
        write_config(
            "models:\n"
            "  - name: echo\n    kind: echo\n    canary_file: canaries.txt\n"
            "  - name: tiny\n    path: models/tiny\n"
        )
    )
    echo, tiny = config.model_list
    assert (echo.kind, echo.path, echo.canary_file) == ("echo", None, tmp_path / "canaries.txt")
    assert (tiny.kind, tiny.path, tiny.canary_file) == ("transformers", tmp_path / "models" / "tiny", None)


def test_the_default_model_is_still_the_transformers_demo(tmp_path: Path) -> None:
    (model,) = Config.embedded(tmp_path).model_list
    assert (model.name, model.kind, model.canary_file) == (DEMO_MODEL_NAME, "transformers", None)


def test_explicit_empty_model_list_is_kept(write_config) -> None:
    assert Config.load(write_config("models: []\n")).model_list == []


# (yaml text, the "key: message" part expected after the file name)
INVALID = [
    ("server:\n  port: 99999\n", "server.port: Input should be less than or equal to 65535"),
    ("server:\n  port: -1\n", "server.port: Input should be greater than or equal to 0"),
    ("server:\n  port: eighty\n", "server.port: "),
    ("server:\n  max_body_bytes: 10\n", "server.max_body_bytes: "),
    ("server:\n  max_messages: 0\n", "server.max_messages: "),
    ("server:\n  log_level: INFO\n", "server.log_level: "),
    ("server:\n  bogus: 1\n", "server.bogus: Extra inputs are not permitted"),
    ("bogus: 1\n", "bogus: Extra inputs are not permitted"),
    ("server: 5\n", "server: "),
    ("models:\n  - name: a\n", "models.0.path: Field required"),
    ("models:\n  - path: /m\n", "models.0.name: Field required"),
    ("models:\n  - name: ../up\n    path: /m\n", "models.0.name: "),
    ("models:\n  - name: a\n    path: /m\n    max_queue: -1\n", "models.0.max_queue: "),
    (
        "models:\n  - name: a\n    kind: gguf\n",
        "models.0.kind: Input should be 'transformers', 'echo', 'upstream' or 'remote'",
    ),
    (
        "models:\n  - name: a\n    kind: echo\n    path: /m\n",
        "models.0.path: Value error, must not be set for kind echo",
    ),
    (
        "models:\n  - name: a\n    kind: upstream\n",
        "models.0: Value error, kind upstream needs an upstream: section",
    ),
    (
        "models:\n  - {name: a, kind: echo, upstream: {base_url: 'http://u'}}\n",
        "models.0: Value error, upstream: is only for kind upstream",
    ),
    (
        "models:\n  - {name: a, kind: upstream, upstream: {base_url: 'http://key@u/v1'}}\n",
        "models.0.upstream.base_url: String should match pattern",
    ),
    (
        "models:\n  - {name: a, kind: upstream, upstream: {base_url: 'file:///etc'}}\n",
        "models.0.upstream.base_url: String should match pattern",
    ),
    (
        "models:\n  - {name: a, kind: upstream, upstream: {base_url: 'http://u', api_key_env: K, api_key_file: f}}\n",
        "models.0.upstream: Value error, give api_key_env or api_key_file, not both",
    ),
    (
        "models:\n  - {name: a, kind: upstream, gpus: [0], upstream: {base_url: 'http://u'}}\n",
        "models.0: Value error, gpus: not for kind upstream",
    ),
    (
        "models:\n  - name: a\n    kind: remote\n",
        "models.0: Value error, kind remote needs a remote: section",
    ),
    (
        "models:\n  - {name: a, kind: remote, remote: {cert_file: c, key_file: k, ca_file: a}}\n",
        "models.0.remote: Value error, give endpoints or dns (one of them)",
    ),
    (
        "models:\n  - {name: a, kind: remote, remote: {endpoints: ['h:1'], dns: 'h:2', cert_file: c,"
        " key_file: k, ca_file: a}}\n",
        "models.0.remote: Value error, give endpoints or dns (one of them)",
    ),
    (
        "models:\n  - {name: a, kind: remote, remote: {endpoints: ['h:70000', 'h'], cert_file: c, key_file: k,"
        " ca_file: a}}\n",
        "models.0.remote.endpoints: Value error, not host:port: 'h:70000', 'h'",
    ),
    (
        "models:\n  - {name: a, kind: remote, remote: {dns: 'svc:0', cert_file: c, key_file: k, ca_file: a}}\n",
        "models.0.remote.dns: Value error, port out of range",
    ),
    (
        "models:\n  - {name: a, kind: remote, replicas: 2, remote: {dns: 'svc:7443', cert_file: c, key_file: k,"
        " ca_file: a}}\n",
        "models.0: Value error, replicas: not for kind remote",
    ),
    (
        "models:\n  - {name: a, kind: echo, remote: {dns: 'svc:7443', cert_file: c, key_file: k, ca_file: a}}\n",
        "models.0: Value error, remote: is only for kind remote",
    ),
    ("audit:\n  backend: postgres\n", "audit: Value error, backend postgres needs postgres_dsn_file"),
    (
        "console:\n  oidc: {issuer: 'https://idp.example', client_id: llmos-console}\n",
        "(top level): Value error, console.oidc.issuer must be one of oidc.issuers",
    ),
    ("unsafe_disable: [auth]\n", "unsafe_disable.0: Input should be 'policy', 'pii' or 'audit'"),
    ("models:\n  - name: a\n    kind: echo\n    canary_file: [x]\n", "models.0.canary_file: "),
    (
        "models:\n  - name: a\n    path: /m\n  - name: a\n    path: /n\n",
        "models: Value error, duplicate model names: a",
    ),
    ("models:\n  - name: a\n    kind: echo\n    replicas: 0\n", "models.0.replicas: "),
    (
        "models:\n  - name: a\n    kind: echo\n    replicas: 2\n    gpus: [0]\n",
        "models.0: Value error, gpus names one worker's devices; with replicas > 1",
    ),
    ("workers:\n  start_timeout_s: 0\n", "workers.start_timeout_s: "),
    ("workers:\n  spawner: zygote\n", "workers.spawner: Input should be 'exec' or 'fork_server'"),
    ("policy:\n  dirr: x\n", "policy.dirr: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("text", "expected"), INVALID, ids=[e.split(":")[0] + "-" + t[:12] for t, e in INVALID]
)
def test_invalid_values_name_the_file_and_the_key(write_config, text: str, expected: str) -> None:
    path = write_config(text)

    with pytest.raises(ConfigError) as info:
        Config.load(path)

    assert str(info.value).startswith(f"{path}: {expected}")


def test_several_problems_are_counted(write_config) -> None:
    path = write_config("server:\n  port: -1\n  max_messages: 0\nbogus: 1\n")

    with pytest.raises(ConfigError, match=r"\(and 2 more problem\(s\)\)$"):
        Config.load(path)


@pytest.mark.parametrize(
    ("text", "where"),
    [("a: [\n", "line 2, column 1"), ("a: b\n c: d\n", "line 2, column 3"), ("x: 1\ny: {\n", "line 3")],
)
def test_invalid_yaml_reports_the_line(write_config, text: str, where: str) -> None:
    path = write_config(text)

    with pytest.raises(ConfigError) as info:
        Config.load(path)

    assert str(info.value).startswith(f"{path}: not valid YAML at {where}")


@pytest.mark.parametrize(("text", "kind"), [("- 1\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(write_config, text: str, kind: str) -> None:
    path = write_config(text)

    with pytest.raises(ConfigError, match=f"the top level must be a mapping of keys, not {kind}$"):
        Config.load(path)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError, match="cannot read the configuration file") as info:
        Config.load(missing)

    assert str(info.value).startswith(str(missing))


def test_config_is_frozen(tmp_path: Path) -> None:
    config = Config.embedded(tmp_path)

    with pytest.raises(ValueError, match="frozen"):
        config.server.port = 1  # type: ignore[misc]


def test_sandbox_section_and_model_limits_reach_the_worker_spec(write_config) -> None:
    from typing import get_args

    from gateway.config import SandboxLayer
    from gateway.runtime import sandbox_settings
    from sandbox.isolation import LAYERS

    assert get_args(SandboxLayer) == LAYERS
    config = Config.load(
        write_config(
            "sandbox: {strict: true, optional: [cgroup], uid: 1234, gid: 1235}\n"
            "models:\n  - {name: m, kind: echo, memory_limit_bytes: 2147483648, gpus: [1, 0]}\n"
        )
    )
    settings = sandbox_settings(config)
    assert (settings.strict, settings.optional, settings.uid, settings.gid) == (True, ("cgroup",), 1234, 1235)
    model = config.model_list[0]
    assert (model.memory_limit_bytes, model.gpus) == (2**31, [1, 0])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sandbox: {optional: [firewall]}\n", "sandbox.optional.0"),
        ("sandbox: {strict: yes-please}\n", "sandbox.strict"),
        ("models:\n  - {name: m, kind: echo, memory_limit_bytes: 1000}\n", "models.0.memory_limit_bytes"),
        ("models:\n  - {name: m, kind: echo, gpus: [0, 0]}\n", "models.0.gpus"),
    ],
)
def test_bad_sandbox_settings_name_the_key(write_config, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.load(write_config(text))


def test_an_upstream_model_entry(write_config, tmp_path: Path) -> None:
    config = Config.load(
        write_config(
            "models:\n  - name: gpt\n    kind: upstream\n    labels: [external]\n"
            "    upstream: {base_url: 'https://api.example.com/v1', model: gpt-4o, api_key_file: key,"
            " retries: 0, timeout_s: 30}\n"
            "unsafe_disable: [pii, audit]\n"
        )
    )
    model = config.model_list[0]
    assert (model.kind, model.path, model.labels) == ("upstream", None, ["external"])
    assert model.upstream is not None
    assert model.upstream.api_key_file == tmp_path / "key"  # relative to the file, like every path
    assert (model.upstream.model, model.upstream.retries, model.upstream.timeout_s) == ("gpt-4o", 0, 30.0)
    assert config.unsafe_disable == ("pii", "audit")
    assert Config.embedded(tmp_path).unsafe_disable == ()


def test_a_remote_model_entry_and_a_worker_host(write_config, tmp_path: Path) -> None:
    config = Config.load(
        write_config(
            "models:\n  - name: chat\n    kind: remote\n    labels: [gpu]\n"
            "    remote: {endpoints: ['10.0.0.5:7443', '[fd00::5]:7443'], server_name: llmos-worker,"
            " cert_file: tls/gw.pem, key_file: tls/gw.key, ca_file: tls/ca.pem, health_interval_s: 1}\n"
            "worker_host: {cert_file: w.pem, key_file: w.key, gateway_ca_file: gca.pem}\n"
        )
    )
    (model,) = config.model_list
    assert model.kind == "remote" and model.remote is not None and model.path is None
    assert model.remote.endpoints == ["10.0.0.5:7443", "[fd00::5]:7443"]
    assert model.remote.cert_file == tmp_path / "tls" / "gw.pem"  # relative to the file
    assert model.remote.health_interval_s == 1.0
    assert config.worker_host.gateway_ca_file == tmp_path / "gca.pem"
