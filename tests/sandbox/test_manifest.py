"""Signed model manifests: a directory verifies only byte for byte as signed by a trusted key."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox.manifest import (
    MANIFEST_FILE,
    ManifestError,
    build_manifest,
    describe_weights,
    key_id,
    parse_manifest,
    read_manifest,
    sign,
    verify_model_dir,
    write_manifest,
)

RELEASE = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


@pytest.fixture
def signed_dir(demo_model_dir: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model)
    write_manifest(model, sign(build_manifest(model), RELEASE))
    return model


def refused(model: Path, code: str, match: str | None = None) -> ManifestError:
    with pytest.raises(ManifestError, match=match) as info:
        verify_model_dir(model, [RELEASE.public_key()])
    assert info.value.code == code
    return info.value


def test_a_signed_directory_verifies_and_is_described(signed_dir: Path) -> None:
    manifest = verify_model_dir(signed_dir, [RELEASE.public_key()])
    assert manifest.weights.dtype == "F32"
    assert manifest.weights.parameters > 0
    assert manifest.weights.tensor_bytes == 4 * manifest.weights.parameters
    assert manifest.weights.memory_bytes > manifest.weights.tensor_bytes
    assert {f.path for f in manifest.files} >= {"model.safetensors", "config.json"}
    assert MANIFEST_FILE not in {f.path for f in manifest.files}
    assert manifest.signatures[0][0] == key_id(RELEASE.public_key())
    assert manifest.digest.startswith("sha256:") and len(manifest.digest) == 71
    assert read_manifest(signed_dir) == manifest


def test_a_changed_weight_byte_is_refused(signed_dir: Path) -> None:
    weights = signed_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    refused(signed_dir, "manifest_file_changed", "model.safetensors does not match")


def test_a_missing_file_is_refused(signed_dir: Path) -> None:
    (signed_dir / "config.json").unlink()
    refused(signed_dir, "manifest_file_missing", "config.json is missing")


def test_an_added_file_is_refused(signed_dir: Path) -> None:
    (signed_dir / "extra.pkl").write_bytes(b"\x80\x04N.")
    refused(signed_dir, "manifest_extra_file", "extra.pkl is not in the signed manifest")


def test_an_edited_manifest_fails_its_signature(signed_dir: Path) -> None:
    path = signed_dir / MANIFEST_FILE
    doc = json.loads(path.read_text())
    doc["files"][0]["sha256"] = "0" * 64  # to pass off a swapped file
    path.write_text(json.dumps(doc))
    refused(signed_dir, "manifest_signature_invalid", "does not verify")


def test_unsigned_untrusted_and_missing_manifests_are_refused(signed_dir: Path) -> None:
    write_manifest(signed_dir, build_manifest(signed_dir))
    refused(signed_dir, "manifest_unsigned")
    write_manifest(signed_dir, sign(build_manifest(signed_dir), OTHER))
    refused(signed_dir, "manifest_signature_invalid", "only by untrusted keys")
    (signed_dir / MANIFEST_FILE).unlink()
    refused(signed_dir, "manifest_missing", "llmos models sign")


def test_a_second_release_key_keeps_the_first_valid(signed_dir: Path) -> None:
    both = sign(read_manifest(signed_dir), OTHER)
    write_manifest(signed_dir, both)
    assert len(both.signatures) == 2
    verify_model_dir(signed_dir, [OTHER.public_key()])
    verify_model_dir(signed_dir, [RELEASE.public_key()])
    assert len(sign(both, OTHER).signatures) == 2  # re-signing replaces that key's signature


def test_pickle_weights_cannot_be_signed(demo_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model)
    (model / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ManifestError) as info:
        build_manifest(model)
    assert info.value.code == "unsafe_weights"


def _safetensors(path: Path, header: dict[str, object]) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)


def test_an_unknown_dtype_is_refused(tmp_path: Path) -> None:
    _safetensors(
        tmp_path / "w.safetensors", {"w": {"dtype": "Q4_K", "shape": [2, 2], "data_offsets": [0, 4]}}
    )
    with pytest.raises(ManifestError, match="unknown dtype 'Q4_K'") as info:
        build_manifest(tmp_path)
    assert info.value.code == "unknown_dtype"


def test_weights_are_described_from_headers_alone() -> None:
    headers = [
        ("a.safetensors", {"__metadata__": {"format": "pt"}, "x": {"dtype": "BF16", "shape": [10, 10]}}),
        ("b.safetensors", {"y": {"dtype": "F32", "shape": [5]}, "z": {"dtype": "BF16", "shape": []}}),
    ]
    info = describe_weights(headers)
    assert (info.dtype, info.parameters, info.tensor_bytes) == ("BF16", 106, 101 * 2 + 5 * 4)
    with pytest.raises(ManifestError, match="no safetensors tensors"):
        describe_weights([])
    with pytest.raises(ManifestError, match="bad shape"):
        describe_weights([("c", {"t": {"dtype": "F16", "shape": [-1]}})])


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d.update(format="other/1"), "not a llmos-model-manifest/1"),
        (lambda d: d.update(extra=1), "exactly format, model, files, signatures"),
        (lambda d: d["files"].append(dict(d["files"][0])), "sorted by path, each once"),
        (lambda d: d["files"][0].update(path="../etc/passwd"), "not a plain relative path"),
        (lambda d: d["files"][0].update(size=-1), "malformed"),
        (lambda d: d["model"].update(memory_bytes=1), "does not follow"),
        (lambda d: d["model"].update(dtype="Q4"), "unknown dtype"),
        (lambda d: d.update(signatures=[{"key_id": 1, "signature": "x"}]), "must be strings"),
    ],
)
def test_malformed_manifests_say_what_is_wrong(signed_dir: Path, mutate: object, why: str) -> None:
    doc = json.loads((signed_dir / MANIFEST_FILE).read_text())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(ManifestError, match=why):
        parse_manifest(json.dumps(doc))
    with pytest.raises(ManifestError, match="not JSON"):
        parse_manifest("{")


def test_symlinks_and_other_non_files_are_refused(signed_dir: Path, tmp_path: Path) -> None:
    (signed_dir / "pytorch_model.bin").symlink_to(tmp_path / "filled-in-later")  # dangling today
    refused(signed_dir, "manifest_invalid", "pytorch_model.bin is not a regular file")
    (signed_dir / "pytorch_model.bin").unlink()
    (signed_dir / "extra").symlink_to(tmp_path, target_is_directory=True)
    refused(signed_dir, "manifest_invalid", "extra is not a regular file")


def test_numbers_past_the_canonical_range_are_malformed_not_a_crash(signed_dir: Path) -> None:
    doc = json.loads((signed_dir / MANIFEST_FILE).read_text())
    doc["files"][0]["size"] = 2**60
    with pytest.raises(ManifestError, match="malformed") as info:
        parse_manifest(json.dumps(doc))
    assert info.value.code == "manifest_invalid"
    with pytest.raises(ManifestError) as deep:
        parse_manifest('{"format": "llmos-model-manifest/1", "model": ' + "[" * 100000 + "]" * 100000 + "}")
    assert deep.value.code == "manifest_invalid"


def test_the_memory_estimate_comes_from_the_manifest_or_the_weights(signed_dir: Path) -> None:
    from sandbox.manifest import RUNTIME_OVERHEAD_BYTES, estimate_memory

    assert estimate_memory(signed_dir) == read_manifest(signed_dir).weights.memory_bytes
    (signed_dir / MANIFEST_FILE).unlink()  # unsigned: the same formula over the file sizes
    size = (signed_dir / "model.safetensors").stat().st_size
    assert estimate_memory(signed_dir) == size + size // 5 + RUNTIME_OVERHEAD_BYTES
