"""Signed model manifests: exactly which files a model directory holds, signed by a release key.

A manifest (``llmos-manifest.json`` in the model directory) lists every file with its size and
SHA-256, and describes the weights: format (safetensors only), dtype, parameter count, and a
memory estimate for placement. Its ``signatures`` are Ed25519 signatures, by release keys, over
the canonical JSON (RFC 8785 subset, ``gateway.audit.canonical``) of everything else::

    {"format": "llmos-model-manifest/1",
     "model": {"weights_format": "safetensors", "dtype": "BF16", "parameters": 1234,
               "tensor_bytes": 2468, "memory_bytes": 268437924},
     "files": [{"path": "config.json", "size": 612, "sha256": "<hex>"}, ...],
     "signatures": [{"key_id": "<16 hex>", "signature": "<base64>"}]}

:func:`verify_model_dir` is what the gateway runs before a worker may load a directory: the
manifest parses, a trusted key signed it, and the directory holds exactly the listed files
with their sizes and hashes (a changed, missing or added file is refused: an added pickle file
is as much tampering as a changed weight). Errors are :class:`ManifestError` with a ``code``
(``manifest_missing``, ``manifest_invalid``, ``manifest_unsigned``,
``manifest_signature_invalid``, ``manifest_file_missing``, ``manifest_file_changed``,
``manifest_extra_file``, ``unknown_dtype``, ``unsafe_weights``) and a message that names the file.

The weights are described from the safetensors headers alone (8-byte little-endian length, then
JSON: ``{name: {"dtype", "shape", "data_offsets"}}``): no torch import, nothing executed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import stat
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.canonical import MAX_SAFE_INTEGER, canonical_json
from gateway.audit.keys import load_private_key, load_public_key
from gateway.errors import AuditError, WorkerError
from sandbox.modeldir import check_model_dir

MANIFEST_FILE = "llmos-manifest.json"
FORMAT = "llmos-model-manifest/1"
# safetensors dtypes and their size in bytes
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# Memory estimate: the weights, plus a fifth for activations and the KV cache at the context
# lengths this gateway serves, plus the runtime (interpreter, torch, tokenizer).
RUNTIME_OVERHEAD_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors reference limit
_CHUNK = 1024 * 1024


class ManifestError(WorkerError):
    """A model directory does not match a manifest signed by a trusted key (or has none)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class WeightsInfo:
    dtype: str  # the dtype holding the most parameters
    parameters: int
    tensor_bytes: int

    @property
    def memory_bytes(self) -> int:
        return self.tensor_bytes + self.tensor_bytes // 5 + RUNTIME_OVERHEAD_BYTES


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileEntry, ...]
    weights: WeightsInfo
    signatures: tuple[tuple[str, str], ...] = ()  # (key_id, base64 signature)

    def body(self) -> dict[str, Any]:
        """Everything but the signatures: what they sign."""
        return {
            "format": FORMAT,
            "model": {
                "weights_format": "safetensors",
                "dtype": self.weights.dtype,
                "parameters": self.weights.parameters,
                "tensor_bytes": self.weights.tensor_bytes,
                "memory_bytes": self.weights.memory_bytes,
            },
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }

    def signed_bytes(self) -> bytes:
        return canonical_json(self.body())

    def to_json(self) -> str:
        doc = self.body()
        doc["signatures"] = [{"key_id": k, "signature": s} for k, s in self.signatures]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @property
    def digest(self) -> str:
        """``sha256:`` of the signed bytes: names exactly this version of the model."""
        return "sha256:" + hashlib.sha256(self.signed_bytes()).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- describing a directory (reads files) -----------------------------------------------------


def _relative(model_dir: Path, path: Path) -> str:
    return path.relative_to(model_dir).as_posix()


def _model_files(model_dir: Path) -> list[Path]:
    """Every file of the directory but the manifest; ManifestError for anything that is not a
    plain file or directory (a symlink could point anywhere, later)."""
    files = []
    for path in model_dir.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ManifestError(
                f"{model_dir}: {_relative(model_dir, path)} is not a regular file (a symlink, FIFO or"
                " device); a model directory holds plain files only",
                code="manifest_invalid",
            )
        if _relative(model_dir, path) != MANIFEST_FILE:
            files.append(path)
    return sorted(files)


def _sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; ManifestError if it is not one."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ManifestError(f"{path.name}: not a safetensors file (too short)", code="manifest_invalid")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise ManifestError(f"{path.name}: safetensors header too large", code="manifest_invalid")
        text = handle.read(length)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path.name}: safetensors header is not JSON", code="manifest_invalid") from exc
    if not isinstance(header, dict):
        raise ManifestError(f"{path.name}: safetensors header is not an object", code="manifest_invalid")
    return header


def describe_weights(headers: Iterable[tuple[str, dict[str, Any]]]) -> WeightsInfo:
    """dtype, parameter count and bytes of the tensors in safetensors headers. Pure."""
    by_dtype: Counter[str] = Counter()
    tensor_bytes = 0
    for name, header in headers:
        for tensor, spec in header.items():
            if tensor == "__metadata__":
                continue
            if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
                raise ManifestError(f"{name}: tensor {tensor!r} has no shape", code="manifest_invalid")
            dtype = spec.get("dtype")
            if dtype not in DTYPE_BYTES:
                raise ManifestError(
                    f"{name}: tensor {tensor!r} has unknown dtype {dtype!r}"
                    f" (known: {', '.join(sorted(DTYPE_BYTES))})",
                    code="unknown_dtype",
                )
            shape = spec["shape"]
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise ManifestError(f"{name}: tensor {tensor!r} has a bad shape", code="manifest_invalid")
            count = math.prod(shape)
            by_dtype[dtype] += count
            tensor_bytes += count * DTYPE_BYTES[dtype]
    if not by_dtype:
        raise ManifestError("the model directory has no safetensors tensors", code="manifest_invalid")
    dtype = max(sorted(by_dtype), key=lambda d: by_dtype[d])
    return WeightsInfo(dtype=dtype, parameters=sum(by_dtype.values()), tensor_bytes=tensor_bytes)


def build_manifest(model_dir: Path) -> Manifest:
    """Hash and describe every file of ``model_dir`` (unsigned). Pickle weights are refused."""
    try:
        check_model_dir(model_dir)
    except WorkerError as exc:
        raise ManifestError(str(exc), code=getattr(exc, "code", "manifest_invalid")) from exc
    files = _model_files(model_dir)
    entries = []
    for path in files:
        size, digest = _sha256(path)
        entries.append(FileEntry(_relative(model_dir, path), size, digest))
    weights = describe_weights((p.name, safetensors_header(p)) for p in files if p.suffix == ".safetensors")
    return Manifest(tuple(entries), weights)


# -- signing and reading ----------------------------------------------------------------------


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    """The manifest with one more signature (a key signs once). Pure."""
    kid = key_id(key.public_key())
    others = tuple(s for s in manifest.signatures if s[0] != kid)
    signature = base64.b64encode(key.sign(manifest.signed_bytes())).decode("ascii")
    return Manifest(manifest.files, manifest.weights, (*others, (kid, signature)))


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / MANIFEST_FILE
    path.write_text(manifest.to_json(), encoding="utf-8")
    return path


def parse_manifest(text: str) -> Manifest:
    """A manifest from its JSON text; ManifestError(manifest_invalid) saying what is wrong."""
    try:
        return _parse_manifest(text)
    except ManifestError:
        raise
    except (ValueError, TypeError, RecursionError, AuditError) as exc:  # whatever a crafted file holds
        raise ManifestError(
            f"{MANIFEST_FILE}: malformed ({type(exc).__name__})", code="manifest_invalid"
        ) from exc


def _parse_manifest(text: str) -> Manifest:
    def bad(why: str) -> ManifestError:
        return ManifestError(f"{MANIFEST_FILE}: {why}", code="manifest_invalid")

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} document")
    if set(doc) != {"format", "model", "files", "signatures"}:
        raise bad("members must be exactly format, model, files, signatures")
    model, files, signatures = doc["model"], doc["files"], doc["signatures"]
    fields = {"weights_format", "dtype", "parameters", "tensor_bytes", "memory_bytes"}
    if not isinstance(model, dict) or set(model) != fields or model["weights_format"] != "safetensors":
        raise bad("model must describe safetensors weights (dtype, parameters, tensor_bytes, memory_bytes)")
    if model["dtype"] not in DTYPE_BYTES:
        raise ManifestError(f"{MANIFEST_FILE}: unknown dtype {model['dtype']!r}", code="unknown_dtype")
    if not all(_count(model[k]) for k in ("parameters", "tensor_bytes", "memory_bytes")):
        raise bad("parameters, tensor_bytes and memory_bytes must be non-negative integers")
    weights = WeightsInfo(model["dtype"], model["parameters"], model["tensor_bytes"])
    if weights.memory_bytes != model["memory_bytes"]:
        raise bad("memory_bytes does not follow from tensor_bytes")
    if not isinstance(files, list) or not files:
        raise bad("files must be a non-empty list")
    entries = []
    for item in files:
        if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
            raise bad("each file needs exactly path, size, sha256")
        path, size, digest = item["path"], item["size"], item["sha256"]
        if not isinstance(path, str) or not _safe_path(path):
            raise bad(f"file path {path!r} is not a plain relative path")
        if not _count(size) or not (isinstance(digest, str) and len(digest) == 64 and _hex(digest)):
            raise bad(f"file {path!r}: size or sha256 malformed")
        entries.append(FileEntry(path, size, digest))
    if [e.path for e in entries] != sorted({e.path for e in entries}):
        raise bad("files must be sorted by path, each once")
    if not isinstance(signatures, list):
        raise bad("signatures must be a list")
    sigs = []
    for item in signatures:
        if not isinstance(item, dict) or set(item) != {"key_id", "signature"}:
            raise bad("each signature needs exactly key_id and signature")
        if not all(isinstance(item[k], str) for k in ("key_id", "signature")):
            raise bad("key_id and signature must be strings")
        sigs.append((item["key_id"], item["signature"]))
    return Manifest(tuple(entries), weights, tuple(sigs))


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return (
        bool(path)
        and path != MANIFEST_FILE
        and all(p not in ("", ".", "..") for p in parts)
        and "\\" not in path
    )


def read_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(
            f"{model_dir}: no {MANIFEST_FILE}; sign the model with `llmos models sign {model_dir} --key KEY`",
            code="manifest_missing",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable ({exc})", code="manifest_invalid") from exc
    return parse_manifest(text)


def check_signature(manifest: Manifest, trusted: Sequence[Ed25519PublicKey]) -> str:
    """The key id of a trusted key whose signature verifies; ManifestError otherwise. Pure."""
    if not manifest.signatures:
        raise ManifestError(f"{MANIFEST_FILE} is not signed", code="manifest_unsigned")
    keys = {key_id(k): k for k in trusted}
    data = manifest.signed_bytes()
    for kid, signature in manifest.signatures:
        key = keys.get(kid)
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(signature, validate=True), data)
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise ManifestError(
                f"{MANIFEST_FILE}: the signature of trusted key {kid} does not verify"
                " (the manifest was altered after signing)",
                code="manifest_signature_invalid",
            ) from exc
        return kid
    raise ManifestError(
        f"{MANIFEST_FILE} is signed only by untrusted keys"
        f" ({', '.join(k for k, _ in manifest.signatures)}; trusted: {', '.join(keys) or 'none'})",
        code="manifest_signature_invalid",
    )


def verify_model_dir(model_dir: Path, trusted: Sequence[Ed25519PublicKey]) -> Manifest:
    """The directory's manifest, once it is signed by a trusted key and matches the directory
    exactly; ManifestError naming the first problem otherwise."""
    manifest = read_manifest(model_dir)
    check_signature(manifest, trusted)
    listed = {entry.path: entry for entry in manifest.files}
    present = {_relative(model_dir, p): p for p in _model_files(model_dir)}
    for extra in sorted(set(present) - set(listed)):
        raise ManifestError(f"{model_dir}: {extra} is not in the signed manifest", code="manifest_extra_file")
    for path, entry in listed.items():
        file = present.get(path)
        if file is None:
            raise ManifestError(f"{model_dir}: {path} is missing", code="manifest_file_missing")
        size, digest = _sha256(file)
        if (size, digest) != (entry.size, entry.sha256):
            raise ManifestError(
                f"{model_dir}: {path} does not match the signed manifest (size {size} vs {entry.size},"
                " or its SHA-256 differs): the file was changed",
                code="manifest_file_changed",
            )
    return manifest


def estimate_memory(model_dir: Path) -> int:
    """What placement counts for a model directory: its manifest's estimate, or (no usable
    manifest: unsigned models, allowed by model_trust.unsafe_allow_unsigned) the same formula
    over the size of its safetensors files. The manifest's signature is checked at start."""
    try:
        return read_manifest(model_dir).weights.memory_bytes
    except ManifestError:
        size = sum(p.stat().st_size for p in model_dir.rglob("*.safetensors"))
        return WeightsInfo("F32", 0, size).memory_bytes


def load_release_key(path: Path) -> Ed25519PrivateKey:
    try:
        return load_private_key(path, what="model release key")
    except AuditError as exc:
        raise ManifestError(str(exc), code="release_key_invalid") from exc


def load_public_keys(paths: Iterable[Path]) -> list[Ed25519PublicKey]:
    try:
        return [load_public_key(p, what="model release public key") for p in paths]
    except AuditError as exc:
        raise ManifestError(str(exc), code="release_key_invalid") from exc
