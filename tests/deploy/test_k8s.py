"""deploy/k8s: every overlay renders with `kubectl kustomize` and validates, offline and
strictly (no unknown fields), against the Kubernetes schemas (kubernetes-validate); the pods
meet the restricted Pod Security Standard, and no secret value is in any rendered manifest."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
KUBERNETES_VERSION = "1.31.0"  # the oldest release the manifests promise to work on

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_there_are_overlays_for_cpu_gpu_opa_and_several_nodes() -> None:
    assert {"single-node", "gpu-node", "single-node-opa", "multi-node"} <= set(OVERLAYS)


def test_every_object_validates_strictly(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any schema error


def test_the_validator_catches_mistakes() -> None:
    deployment = by_kind(render(K8S / "overlays" / "single-node"), "Deployment")[0]
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def gateway_config(docs: list[dict[str, Any]]) -> str:
    text: str = named(docs, "ConfigMap", "llmos-config")["data"]["llmos.yaml"]
    return text


def containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def test_pods_meet_the_restricted_pod_security_standard(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    (namespace,) = by_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for deployment in by_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in containers(deployment):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "add" not in sc["capabilities"] and not sc.get("privileged"), c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]
        for c in pod["containers"]:
            assert c.get("readinessProbe"), c["name"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert not any("hostPath" in v for v in volumes.values())


def test_the_gateway_probes_and_reads_its_keys_from_secrets(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = overlay
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "llmos-gateway")
    gateway = next(c for c in containers(deployment) if c["name"] == "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--no-admin-key" in gateway["args"]  # no API key in the pod's log
    config = yaml.safe_load(gateway_config(docs))
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    for path in (
        config["audit"]["signing_key"],
        config["auth"]["pepper_file"],
        config["audit"]["digest_key_file"],
    ):
        assert mounts[path]["name"] == "keys" and mounts[path]["subPath"] == Path(path).name
    secret = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
    assert secret["secret"]["defaultMode"] == 0o440  # group-readable by fsGroup: gateway/filemode.py


def test_the_configuration_in_every_overlay_is_valid_llmos_configuration(
    overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    from gateway.config import Config

    _, docs = overlay
    text = gateway_config(docs)
    config = Config.from_mapping(yaml.safe_load(text), source="llmos.yaml", base_dir=tmp_path)
    assert config.sandbox.strict is True
    assert config.state_dir == Path("/var/lib/llmos/state")


def test_everything_is_in_the_llmos_namespace(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay  # names like llmos-worker-assistant.llmos.svc and the Secrets depend on it
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"llmos"}


def test_network_is_denied_by_default(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    gateway = policies["llmos-gateway"]
    assert [p["port"] for rule in gateway["ingress"] for p in rule["ports"]] == [8080]
    # DNS; with several nodes also worker hosts, PostgreSQL, Redis and the OIDC provider
    expected = {53, 7443, 5432, 6379, 443} if name == "multi-node" else {53}
    assert {p["port"] for rule in gateway["egress"] for p in rule["ports"]} == expected


def test_the_state_directory_is_made_before_the_gateway_and_opa_start() -> None:
    deployment = by_kind(render(K8S / "overlays" / "single-node-opa"), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["args"][:1] == ["init"] and "--no-admin-key" in init["args"]
    opa = next(c for c in pod["containers"] if c["name"] == "opa")
    (mount,) = opa["volumeMounts"]
    assert mount["readOnly"] is True and "subPath" not in mount  # no root-owned subPath made early
    assert opa["args"][-1] == mount["mountPath"] + "/state/policies"


def test_the_gpu_overlay_asks_for_gpus_and_the_cuda_image() -> None:
    docs = render(K8S / "overlays" / "gpu-node")
    deployment = by_kind(docs, "Deployment")[0]
    gateway = deployment["spec"]["template"]["spec"]["containers"][0]
    assert gateway["image"].endswith(":cuda")
    assert int(gateway["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_secrets_render_from_generated_files_and_nowhere_else(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("generated"))
    made = subprocess.run(
        ["bash", str(copy / "make-secrets.sh")], capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    generated = copy / "secrets" / "generated"
    assert {p.name for p in generated.iterdir()} == {
        "audit_signing_key.pem",
        "audit_signing_key.pub.pem",
        "api_key_pepper",
        "audit_digest_key",
    }
    assert all(p.stat().st_mode & 0o077 == 0 for p in generated.iterdir())
    docs = render(copy / "secrets")
    assert [d["metadata"]["name"] for d in by_kind(docs, "Namespace")] == ["llmos"]  # applied first
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "llmos-gateway-keys"
    assert set(secret["data"]) == {"audit_signing_key.pem", "api_key_pepper", "audit_digest_key"}
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    # The keys are usable by llmos as they are.
    from gateway.audit.keys import load_private_key
    from gateway.secretfile import read_secret

    load_private_key(generated / "audit_signing_key.pem")
    assert len(read_secret(generated / "api_key_pepper")) == 32
    # Running it again keeps every key (the audit log is signed with it).
    before = (generated / "audit_signing_key.pem").read_bytes()
    assert (
        subprocess.run(["bash", str(copy / "make-secrets.sh")], capture_output=True, check=False).returncode
        == 0
    )
    assert (generated / "audit_signing_key.pem").read_bytes() == before
    # No overlay carries a secret value.
    values = [p.read_text().strip() for p in generated.iterdir() if p.name != "audit_signing_key.pub.pem"]
    for name in OVERLAYS:
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(copy / "overlays" / name)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not any(v in rendered for v in values)
        assert "kind: Secret" not in rendered


# -- several nodes: gateway replicas, shared audit log, worker hosts over mTLS ------------------


@pytest.fixture(scope="module")
def multi_node() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "multi-node")


def test_gateway_replicas_scale_and_roll_without_a_shared_volume(multi_node: list[dict[str, Any]]) -> None:
    gateway = named(multi_node, "Deployment", "llmos-gateway")
    assert "replicas" not in gateway["spec"]  # the HPA owns it: an apply must not reset it
    assert gateway["spec"]["strategy"]["type"] == "RollingUpdate"
    state = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "state")
    assert "emptyDir" in state and "persistentVolumeClaim" not in state
    assert "llmos-state" not in [p["metadata"]["name"] for p in by_kind(multi_node, "PersistentVolumeClaim")]
    (hpa,) = by_kind(multi_node, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llmos-gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_replicas_share_the_audit_log_and_limits_and_reach_workers_over_mtls(
    multi_node: list[dict[str, Any]], tmp_path: Path
) -> None:
    from gateway.config import Config

    config = Config.from_mapping(
        yaml.safe_load(gateway_config(multi_node)), source="llmos.yaml", base_dir=tmp_path
    )
    assert config.audit.backend == "postgres" and config.limits.backend == "redis"
    assert config.oidc.issuers  # clients authenticate the same way on every replica
    (model,) = config.models or []
    assert model.kind == "remote" and model.remote is not None
    service = named(multi_node, "Service", "llmos-worker-assistant")
    assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists every ready worker host
    assert (
        model.remote.dns
        == f"llmos-worker-assistant.llmos.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    )
    gateway = named(multi_node, "Deployment", "llmos-gateway")
    mounts = {m["mountPath"]: m for m in gateway["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    for path in (model.remote.cert_file, model.remote.key_file, model.remote.ca_file):
        assert mounts[str(path)]["name"] == "remote-tls" and mounts[str(path)]["subPath"] == path.name
    assert mounts[str(config.audit.postgres_dsn_file)]["name"] == "postgres"


def test_worker_hosts_take_a_gpu_each_and_only_gateway_traffic(
    multi_node: list[dict[str, Any]], tmp_path: Path
) -> None:
    from gateway.config import Config

    worker = named(multi_node, "Deployment", "llmos-worker-assistant")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(":cuda") and container["args"][:2] == ["worker", "serve"]
    assert (
        container["args"][-1].endswith(":7443")
        and int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    )
    text = named(multi_node, "ConfigMap", "llmos-worker-assistant-config")["data"]["llmos.yaml"]
    config = Config.from_mapping(yaml.safe_load(text), source="llmos.yaml", base_dir=tmp_path)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    wh = config.worker_host
    assert {str(wh.cert_file), str(wh.key_file), str(wh.gateway_ca_file)} <= mounts
    assert [m.name for m in config.models or []] == ["assistant"]
    policy = named(multi_node, "NetworkPolicy", "llmos-worker-assistant")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []  # no egress at all
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llmos-gateway"}}}]
    assert rule["ports"] == [{"port": 7443, "protocol": "TCP"}]


def test_multi_node_secrets_render_and_their_certificates_work_together(tmp_path: Path) -> None:
    import asyncio

    from sandbox.remote.tls import gateway_context, host_context

    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("generated"))
    made = subprocess.run(
        ["bash", str(copy / "make-secrets.sh"), "--multi-node"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    tls = copy / "secrets-multi-node" / "generated"
    (tls / "audit-dsn").write_text("host=llmos-postgresql dbname=llmos user=llmos password=not-a-real-one\n")
    docs = render(copy / "secrets-multi-node")
    secrets = {d["metadata"]["name"]: set(d["data"]) for d in by_kind(docs, "Secret")}
    assert secrets == {
        "llmos-gateway-keys": {"audit_signing_key.pem", "api_key_pepper", "audit_digest_key"},
        "llmos-gateway-tls": {"gateway.pem", "gateway.key", "worker-ca.pem"},
        "llmos-worker-tls": {"worker.pem", "worker.key", "gateway-ca.pem"},
        "llmos-postgres": {"audit-dsn"},
    }
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)
    ca_keys = [(tls / n).read_text() for n in ("gateway-ca.key", "worker-ca.key")]
    assert not any(k.split("\n")[1] in yaml.safe_dump_all(docs) for k in ca_keys)
    import base64

    encoded = {base64.b64decode(v).decode() for d in by_kind(docs, "Secret") for v in d["data"].values()}
    assert not any(k in encoded for k in ca_keys)  # the CA keys stay offline

    async def handshake() -> bytes:  # the certificates, as made, in a real mutual TLS handshake
        async def hello(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"ok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(
            hello,
            "127.0.0.1",
            0,
            ssl=host_context(tls / "worker.pem", tls / "worker.key", tls / "gateway-ca.pem"),
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=gateway_context(tls / "gateway.pem", tls / "gateway.key", tls / "worker-ca.pem"),
            server_hostname="llmos-worker-assistant",
        )
        data = await reader.read(2)
        writer.close()
        server.close()
        return data

    assert asyncio.run(handshake()) == b"ok"
