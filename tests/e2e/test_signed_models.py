"""A real gateway refuses a model whose files no longer match its signed manifest, records why
in the audit trail, and serves its other models."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import openai
import pytest

from sandbox.manifest import read_manifest
from tests.e2e import audit_reader
from tests.e2e.conftest import LLMOS, Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("signed")
    source = root / "source"  # a release key of its own, whose signed demo model we copy
    env = {"LLMOS_HOME": str(source), "PATH": "/usr/bin:/bin"}
    subprocess.run([LLMOS, "init"], env=env, check=True, capture_output=True, timeout=600)
    copy = root / "copy"
    shutil.copytree(source / "models" / "demo", copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4] ^= 0xFF  # one weight changed after signing
    weights.write_bytes(bytes(data))
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        f"model_trust: {{public_keys: [{source / 'model_release_key.pub.pem'}]}}\n"
        "models:\n"
        "  - {name: good, path: state/models/demo, threads: 1}\n"
        f"  - {{name: bad, path: {copy}, threads: 1}}\n"
        "workers: {restart_backoff_initial_s: 5, restart_backoff_max_s: 5}\n"
    )
    state = root / "state"
    with serve_config(config, port, state, wait=False) as gw:
        yield gw


def test_the_tampered_model_is_refused_and_recorded_the_other_serves(tampered: Gateway) -> None:
    tampered.wait_model("good")
    with pytest.raises(openai.InternalServerError) as err:
        tampered.client().chat.completions.create(
            model="bad", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    assert err.value.status_code == 503 and err.value.code == "worker_not_ready"
    raw = tampered.client().chat.completions.with_raw_response.create(
        model="good", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.parse().choices[0].finish_reason in ("stop", "length")
    served = audit_reader.entry(tampered.home, raw.headers["x-request-id"])
    signed = read_manifest(tampered.home / "models" / "demo").digest
    assert served is not None and served["model_digest"] == signed  # which version answered
    refusals = [
        e["reasons"]
        for e in audit_reader.entries(tampered.home)
        if e["endpoint"] == "sandbox.worker" and e["model"] == "bad"
    ]
    assert ["worker_refused", "manifest_file_changed"] in refusals
    assert "model.safetensors does not match the signed manifest" in tampered.log_path.read_text()
