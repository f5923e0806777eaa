"""`llmos models ...`: release keys, signed manifests, and the models this gateway serves.

llmos models keygen --out release.pem   a new Ed25519 release key pair (release.pem, .pub.pem)
llmos models sign DIR [--key K]         write DIR/llmos-manifest.json signed with K (default:
                                        the state directory's release key)
llmos models add NAME DIR               verify DIR against a trusted key, then serve it as NAME
llmos models list [--json]              every model: source, path, manifest check, dtype,
                                        parameters, memory estimate, digest
llmos models status | load NAME | unload NAME | update NAME DIR
                                        ask the running gateway (its /admin/models API, with the
                                        admin key in $LLMOS_API_KEY): devices, budgets, loaded
                                        models, last use; load or unload one now
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.audit.keys import generate_signing_key
from gateway.config import Config, ModelConfig
from gateway.errors import AuditError, ConfigError
from gateway.modelregistry import (
    add_model,
    all_models,
    load_registry,
    registry_path,
    release_public_keys,
    set_model_path,
)
from sandbox.manifest import (
    Manifest,
    ManifestError,
    build_manifest,
    load_release_key,
    read_manifest,
    sign,
    verify_model_dir,
    write_manifest,
)

ConfigLoader = Callable[[Path | None], Config]


def add_model_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    models = sub.add_parser("models", help="signed model manifests and the models served").add_subparsers(
        dest="models_command", required=True
    )
    p = models.add_parser("keygen", help="create an Ed25519 release key pair for signing models")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="private key file (PEM, 0600); the public key goes to OUT.pub.pem",
    )
    p = models.add_parser(
        "sign",
        help="hash every file of a model directory and write its signed manifest (llmos-manifest.json)",
        description="Refuses pickle-format weights and unknown dtypes; signing again with the same key"
        " replaces that key's signature, another key adds one.",
    )
    add_config(p)
    p.add_argument("dir", type=Path, help="the model directory (safetensors weights)")
    p.add_argument("--key", type=Path, help="release private key (default: the state directory's)")
    p = models.add_parser("add", help="verify a signed model directory and serve it (after a restart)")
    add_config(p)
    p.add_argument("name", help="the model name clients will use")
    p.add_argument("dir", type=Path, help="the model directory, signed by a trusted release key")
    p = models.add_parser("list", help="the configured and added models, each with its manifest check")
    add_config(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    for command, what in (
        ("status", "per-device budget and use, and each model's state, memory and last use"),
        ("load", "load a model now in the running gateway (evicting idle ones if needed)"),
        ("unload", "unload a model now in the running gateway (refused while it is busy)"),
        ("update", "serve a model from a new signed directory without dropping a request"),
    ):
        p = models.add_parser(command, help=f"{what} (needs $LLMOS_API_KEY, an admin key)")
        add_config(p)
        if command != "status":
            p.add_argument("name", help="the model")
        if command == "update":
            p.add_argument("dir", type=Path, help="the new version's directory (signed)")
        p.add_argument("--url", help="the gateway (default: http://server.host:server.port)")
        p.add_argument("--json", action="store_true", help="print the JSON answer")


def _keygen(out: Path) -> int:
    public = out.with_name(out.name.removesuffix(".pem") + ".pub.pem")
    try:
        generate_signing_key(out, public)
    except AuditError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"release key {out}; give {public} to the gateways that should trust it (model_trust.public_keys)")
    return 0


def _sign(config: Config, model_dir: Path, key_path: Path | None) -> int:
    key = load_release_key(key_path or config.release_key)
    try:
        existing: Manifest | None = read_manifest(model_dir)
    except ManifestError:
        existing = None
    manifest = build_manifest(model_dir)
    if existing is not None and existing.body() == manifest.body():
        manifest = existing  # the same content: keep the other keys' signatures
    signed = sign(manifest, key)
    path = write_manifest(model_dir, signed)
    w = signed.weights
    print(
        f"signed {path}: {len(signed.files)} files, {w.dtype}, {w.parameters} parameters,"
        f" ~{w.memory_bytes / 2**20:.0f} MiB to serve; {signed.digest}"
    )
    return 0


def _describe(config: Config, model: ModelConfig, source: str, trusted: list[Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": model.name, "kind": model.kind, "source": source, "path": None}
    if model.kind != "transformers" or model.path is None:
        row["manifest"] = "not needed (loads no files)"
        return row
    row["path"] = str(model.path)
    try:
        manifest = verify_model_dir(model.path, trusted)
    except ManifestError as exc:
        row["manifest"] = f"REFUSED {exc.code}: {exc}"
        return row
    w = manifest.weights
    row.update(
        manifest="verified",
        dtype=w.dtype,
        parameters=w.parameters,
        memory_bytes=w.memory_bytes,
        digest=manifest.digest,
    )
    return row


def _list(config: Config, as_json: bool) -> int:
    trusted = [] if config.model_trust.unsafe_allow_unsigned else release_public_keys(config)
    added = {m.name for m in load_registry(config)}
    rows = [
        _describe(config, m, "added" if m.name in added else "config", trusted) for m in all_models(config)
    ]
    if as_json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    for row in rows:
        detail = ""
        if "digest" in row:
            detail = (
                f" {row['dtype']}, {row['parameters']} parameters, ~{row['memory_bytes'] / 2**20:.0f} MiB,"
                f" {row['digest'][:19]}..."
            )
        print(
            f"{row['name']} ({row['kind']}, {row['source']}) {row['path'] or ''}: {row['manifest']}{detail}"
        )
    return 0


def _remote(config: Config, args: argparse.Namespace) -> int:
    key = os.environ.get("LLMOS_API_KEY")
    if not key:
        raise ConfigError("set LLMOS_API_KEY to an admin key of the running gateway")
    scheme = "https" if config.server.tls is not None else "http"
    url = args.url or f"{scheme}://{config.server.host}:{config.server.port}"
    command = args.models_command
    path = "/admin/models" if command == "status" else f"/admin/models/{args.name}/{command}"
    try:
        response = httpx.request(
            "GET" if command == "status" else "POST",
            url + path,
            headers={"authorization": f"Bearer {key}"},
            json={"path": str(args.dir.resolve())} if command == "update" else None,
            timeout=900,
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"no usable answer from the gateway at {url}: {exc}") from exc
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        print(f"llmos: error: {response.status_code} {error.get('code')}: {error.get('message')}")
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif command == "status":
        for d in body["devices"]:
            print(
                f"{d['device']}: {d['used_bytes'] / 2**20:.0f} of {d['budget_bytes'] / 2**20:.0f} MiB"
                f" ({', '.join(d['models']) or 'no models'})"
            )
        for name, m in body["models"].items():
            print(f"  {name}: {_model_line(m)}")
    elif command == "update":
        print(f"{args.name}: now served from {body['path']} ({body['manifest_digest']})")
        if set_model_path(config, args.name, args.dir):
            print(f"{args.name}: {registry_path(config)} updated, so a restart keeps the new version")
        else:
            print(f"{args.name}: set its path in the configuration too, or a restart serves the old version")
    else:
        print(f"{args.name}: {body['state']}")
    return 0


def _model_line(m: dict[str, Any]) -> str:
    """One model of ``/admin/models`` for ``llmos models status``."""
    pinned = " pinned" if m["pinned"] else ""
    line = (
        f"{m['state']}{pinned}, {m['memory_bytes'] / 2**20:.0f} MiB per replica on"
        f" {', '.join(m['devices']) or '-'}; replicas {m['replicas']}/{m['replicas_configured']}"
    )
    if m["replicas_configured"] > 1:
        line += " (in flight " + ", ".join(str(r["outstanding"]) for r in m["replica_status"]) + ")"
    last = m["last_used"]
    ago = "never used" if last is None else f"last used {max(0.0, time.time() - last):.0f} s ago"
    return f"{line}; {ago}; loads {m['loads']}, evictions {m['evictions']}"


def run_models(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    command = args.models_command
    try:
        if command == "keygen":
            return _keygen(args.out)
        config = load_config(args.config)
        if command == "sign":
            return _sign(config, args.dir, args.key)
        if command in ("status", "load", "unload", "update"):
            return _remote(config, args)
        if command == "add":
            manifest = verify_model_dir(args.dir, release_public_keys(config))
            add_model(config, args.name, args.dir)
            print(f"added {args.name} ({manifest.digest}); restart the gateway to serve it")
            return 0
        return _list(config, args.json)
    except ManifestError as exc:
        print(f"llmos: error: {exc.code}: {exc}")
        return 1
