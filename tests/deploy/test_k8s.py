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


def test_there_are_overlays_for_cpu_gpu_and_opa() -> None:
    assert {"single-node", "gpu-node", "single-node-opa"} <= set(OVERLAYS)


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
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[0]["data"]["llmos.yaml"])
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
    text = by_kind(docs, "ConfigMap")[0]["data"]["llmos.yaml"]
    config = Config.from_mapping(yaml.safe_load(text), source="llmos.yaml", base_dir=tmp_path)
    assert config.sandbox.strict is True
    assert config.state_dir == Path("/var/lib/llmos/state")


def test_network_is_denied_by_default(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    gateway = policies["llmos-gateway"]
    assert [p["port"] for rule in gateway["ingress"] for p in rule["ports"]] == [8080]
    assert {p["port"] for rule in gateway["egress"] for p in rule["ports"]} == {53}


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
