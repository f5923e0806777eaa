"""The ``llmos`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.errors import ApiError, AuditVerifyError, ConfigError, LlmosError
from gateway.explaincommands import add_explain_commands, run_explain
from gateway.gctune import tune_for_serving
from gateway.logs import configure as configure_logging
from gateway.logs import uvicorn_config as uvicorn_logging
from gateway.modelcommands import add_model_commands, run_models
from gateway.policy.commands import add_policy_commands, run_policy
from gateway.sandboxcheck import add_sandbox_commands, run_sandbox
from gateway.types import ENDPOINTS, ROLES
from gateway.workercommands import add_worker_commands, run_worker

DESCRIPTION = """\
llmos: an OpenAI-compatible gateway to sandboxed local models, with API-key authentication,
Rego policy decisions and a signed audit trail.

Without --config, llmos uses its embedded defaults over the state directory $LLMOS_HOME
(or ./.llmos), which `llmos init` (or the first `llmos serve`) creates."""

EPILOG = """\
examples:
  llmos serve                                   # init ./.llmos if needed, listen on 127.0.0.1:8080
  KEY=$(llmos keys create --name alice --role user --tenant acme)
  llmos audit verify                            # check the audit log offline
"""


def _add_no_admin_key(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-admin-key",
        action="store_true",
        help="on a new state directory, do not create the admin API key (which is printed once on"
        " stdout); create keys with `llmos keys create` instead. For containers, whose stdout is"
        " a log: docs/deploy.md",
    )


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="llmos.yaml to use (default: embedded defaults over $LLMOS_HOME or ./.llmos)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmos",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "init",
        help="create the state directory (keys, demo model, policy) and run the policy's tests once,"
        " without serving",
    )
    _add_config(p)
    _add_no_admin_key(p)

    p = sub.add_parser("serve", help="run the gateway (creates the state directory if missing)")
    _add_config(p)
    _add_no_admin_key(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, or server.host)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080, or server.port)")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("create", help="create a key; prints it once, alone on stdout")
    _add_config(p)
    p.add_argument("--name", required=True, help="unique key name")
    p.add_argument(
        "--role",
        required=True,
        help=f"role of the key's principal: {', '.join(ROLES)}, or a role your policy defines"
        " (e.g. contractor)",
    )
    p.add_argument("--tenant", default="default", help="tenant of the key's principal (default: default)")
    p.add_argument("--rpm", type=int, help="requests per minute allowed for this key (default: unlimited)")
    p.add_argument("--tpm", type=int, help="tokens per minute (prompt + completion; default: unlimited)")
    p.add_argument("--daily-tokens", type=int, metavar="N", help="token budget per UTC day (default: none)")
    p.add_argument(
        "--models", metavar="A,B", help="only these models (comma-separated; default: every model)"
    )
    p.add_argument(
        "--endpoints",
        metavar="A,B",
        help=f"only these endpoints (comma-separated, of {', '.join(ENDPOINTS)}; default: all)",
    )
    p.add_argument("--expires-in-days", type=int, metavar="DAYS", help="expire the key after DAYS days")
    p = keys.add_parser("list", help="list keys (never the keys themselves)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p = keys.add_parser("show", help="one key's scopes, limits, status and last use, as JSON")
    _add_config(p)
    p.add_argument("key", metavar="NAME|ID")
    p = keys.add_parser("revoke", help="revoke a key by name or id; takes effect at once")
    _add_config(p)
    p.add_argument("key", metavar="NAME|ID")

    audit = sub.add_parser("audit", help="audit trail tools").add_subparsers(
        dest="audit_command", required=True
    )
    p = audit.add_parser(
        "verify", help="verify the audit log's hash chain and signatures offline; names the first bad entry"
    )
    _add_config(p)
    p.add_argument("--db", type=Path, help="audit database (default: from the configuration)")
    p.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="Ed25519 public key PEM (default: from the configuration); repeat for rotated keys",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a signed checkpoint kept outside the log (GET /v1/audit/checkpoint); the log must"
        " contain it. Repeatable",
    )
    p.add_argument(
        "bundle", nargs="?", type=Path, help="an export directory to verify instead of the database"
    )
    p.add_argument(
        "--previous-segment",
        type=Path,
        help="the archived segment this log continues (llmos audit roll): check the link too",
    )
    p.add_argument("--origin", help="with BUNDLE: the log's origin, as you know it (pins the log)")
    p.add_argument(
        "--expect-seq",
        help="with BUNDLE: the seq range A-B it must hold (proves nothing was cut at its ends)",
    )
    p = audit.add_parser(
        "export", help="write a self-contained, offline-verifiable bundle of audit entries to a directory"
    )
    _add_config(p)
    p.add_argument("--db", type=Path, help="audit database (default: from the configuration)")
    p.add_argument("--since", help="entries at or after this time (ISO 8601 UTC, e.g. 2026-11-01T00:00:00)")
    p.add_argument("--until", help="entries before this time (ISO 8601 UTC)")
    p.add_argument("--tenant", help="only this tenant's entries")
    p.add_argument(
        "--withhold",
        default="",
        help="comma-separated sealed fields to leave out (e.g. principal_id); see audit.sealed_fields",
    )
    p.add_argument("--out", type=Path, required=True, help="the new (or empty) directory to write")
    p = audit.add_parser(
        "roll",
        help="retention: archive the log (read-only) and start its next segment, which commits to it;"
        " stop the gateway first",
    )
    _add_config(p)
    p.add_argument("--archive", type=Path, required=True, help="directory for archived segments")
    p = audit.add_parser(
        "checkpoint", help="print the log's latest signed checkpoint (keep it to verify later)"
    )
    _add_config(p)
    p.add_argument("--db", type=Path, help="audit database (default: from the configuration)")
    p = audit.add_parser(
        "pull",
        help="copy the shared audit log (audit.backend: postgres) into a new SQLite audit file, for"
        " the offline tools (verify, export, checkpoint take --db)",
    )
    _add_config(p)
    p.add_argument("--out", type=Path, required=True, help="the new audit file to write")

    add_policy_commands(sub, _add_config)
    add_sandbox_commands(sub, _add_config)
    add_model_commands(sub, _add_config)
    add_explain_commands(sub, _add_config)
    add_worker_commands(sub, _add_config)
    return parser


def load_config(path: Path | None) -> Config:
    return Config.load(path) if path is not None else Config.embedded()


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.policy.reload import close_engine, load_policy
    from gateway.state import init_state

    config = load_config(args.config)
    result = init_state(config, admin_key=not args.no_admin_key)
    for item in result.created:
        _err(f"created {item}")
    if result.admin_key:
        _err("Admin API key (shown only this once; store it now):")
        print(result.admin_key, flush=True)
    elif not result.created:
        _err(f"{result.state_dir} is already initialised")
    # Compile the policy and run its tests now (a failure is reported here, not at the first
    # start); a bundle that passed is remembered, so `llmos serve` does not test it again.
    close_engine(load_policy(config))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.runtime import build_runtime
    from gateway.state import init_state

    config = load_config(args.config)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    configure_logging(config.server.log_level, config.server.log_format)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every file event at INFO
    result = init_state(config, admin_key=not args.no_admin_key)
    if result.admin_key:
        logging.getLogger("llmos").warning(  # through the configured format (a JSON line in json)
            "initialised %s. Admin API key on stdout (shown only this once; store it now)", result.state_dir
        )
        print(result.admin_key, flush=True)
    app = create_app(build_runtime(config))
    tune_for_serving()  # freeze what start-up built; fewer young collections (gateway/gctune.py)
    tls: dict[str, Any] = {}
    if config.server.tls is not None:
        from gateway.tlsserver import uvicorn_tls_options

        tls = uvicorn_tls_options(config.server.tls)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=config.server.log_level,
            log_config=uvicorn_logging(config.server.log_format),
            server_header=False,
            **tls,
        )
    )
    server.run()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.state import open_key_store

    store = open_key_store(load_config(args.config))
    now = datetime.now(UTC)
    if args.keys_command == "create":
        expires = timedelta(days=args.expires_in_days) if args.expires_in_days is not None else None
        key, info = store.create(
            args.name,
            args.role,
            args.tenant,
            rpm=args.rpm,
            tpm=args.tpm,
            daily_tokens=args.daily_tokens,
            models=_csv(args.models),
            endpoints=_csv(args.endpoints),
            expires_in=expires,
        )
        _err(
            f"created key {info.name} (id {info.id}, role {info.role}, tenant {info.tenant});"
            " shown only once:"
        )
        print(key, flush=True)
    elif args.keys_command == "list":
        for k in store.list():
            row = k.as_dict(now)
            if args.json:
                print(json.dumps(row))
            else:
                used = k.last_used_at or "never"
                scope = "" if k.models is None else f" models={','.join(k.models)}"
                print(
                    f"{k.id}  {k.name:<20} {k.role:<8} {k.tenant:<16} {row['status']!s:<8}"
                    f" created {k.created_at}  last used {used}{scope}"
                )
    elif args.keys_command == "show":
        print(json.dumps(store.get(args.key).as_dict(now), indent=2))
    else:
        info = store.revoke(args.key)
        _err(f"revoked key {info.name} (id {info.id}) at {info.revoked_at}")
    return 0


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.audit.keys import key_fingerprint, load_public_key
    from gateway.audit.store import AuditStore
    from gateway.audit.verify import verify_log

    if args.audit_command == "verify" and args.bundle is not None:
        return _verify_bundle(args)
    if args.audit_command == "roll":
        return _roll(args)
    if args.audit_command == "pull":
        from gateway.audit.source import pull_configured

        pull_configured(load_config(args.config), args.out)
        return 0
    wants_key = args.audit_command in ("verify", "export") and not getattr(args, "public_key", None)
    config = load_config(args.config) if args.db is None or wants_key else None
    if args.db is None and config is not None and config.audit.backend == "postgres":
        from gateway.audit.source import audit_file

        with audit_file(config) as args.db:  # a pulled copy of the shared log
            return cmd_audit(args)
    db = args.db or (config.audit_db if config else None)
    if db is None:  # unreachable: config fills it
        raise ConfigError("need --db")
    if not db.exists():
        raise ConfigError(f"{db}: no audit database here")
    if args.audit_command == "checkpoint":
        with AuditStore.open_readonly(db) as store:
            latest = store.latest_checkpoint()
        if latest is None:
            raise ConfigError(f"{db}: the log has no checkpoint yet")
        print(latest[1], end="")
        return 0
    pubs = getattr(args, "public_key", None) or ([config.public_key] if config else [])
    if args.audit_command == "export":
        return _export(args, db, [load_public_key(p) for p in pubs])
    public_keys = [load_public_key(p) for p in pubs]
    notes = []
    for path in args.checkpoint:
        try:
            notes.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the checkpoint: {exc}") from exc
    try:
        report = verify_log(db, public_keys, checkpoints=notes, previous_segment=args.previous_segment)
    except AuditVerifyError as exc:
        print(f"FAILED: {exc}")
        return 1
    keys = ", ".join(f"sha256:{key_fingerprint(k)}" for k in public_keys)
    print(
        f"OK: {report.entries} entries verified; head {report.head_hash}; Merkle root {report.root};"
        f" {report.checkpoints} signed checkpoints{' and the signed head' if report.signed_head else ''}"
        f" (origin {report.origin}); signing keys {keys}"
    )
    return 0


def _roll(args: argparse.Namespace) -> int:
    from gateway.audit.keys import load_private_key
    from gateway.audit.segment import roll_log

    config = load_config(args.config)
    if config.audit.backend != "sqlite":
        raise ConfigError("audit roll archives a SQLite log; the shared log (backend postgres) is not rolled")
    if not config.audit_db.exists():
        raise ConfigError(f"{config.audit_db}: no audit database here")
    report = roll_log(config.audit_db, args.archive, load_private_key(config.signing_key))
    print(
        f"archived {report.entries} entries of {report.previous_origin} to {report.archived} (read-only);"
        f" the log goes on as {report.origin}, whose checkpoints commit to the archived one."
        f" Verify both: llmos audit verify --previous-segment {report.archived}"
    )
    return 0


def _export(args: argparse.Namespace, db: Path, public_keys: list[Any]) -> int:
    from gateway.audit.bundle import export_bundle

    withhold = [f for f in args.withhold.split(",") if f]
    report = export_bundle(
        db, args.out, public_keys, since=args.since, until=args.until, tenant=args.tenant, withhold=withhold
    )
    print(
        f"exported {report.entries} entries to {args.out}, proved against the signed checkpoint of"
        f" {report.checkpoint_size} entries"
        + (
            f"; {report.left_out_unproved} newer entries are not covered by a checkpoint yet: export again"
            " later to include them"
            if report.left_out_unproved
            else ""
        )
    )
    return 0


def _verify_bundle(args: argparse.Namespace) -> int:
    from gateway.audit.bundle import bundle_keys, verify_bundle
    from gateway.audit.keys import key_fingerprint, load_public_key

    if args.public_key:
        keys = [load_public_key(p) for p in args.public_key]
    else:
        keys = bundle_keys(args.bundle)
        print(
            "warning: no --public-key given; using the key(s) shipped in the bundle. Compare the"
            " fingerprints below with ones you trust.",
            file=sys.stderr,
        )
    expect = None
    if args.expect_seq:
        first, _, last = args.expect_seq.partition("-")
        if not (first.isdigit() and last.isdigit()):
            raise ConfigError(f"--expect-seq {args.expect_seq!r}: write it as A-B, e.g. 120-480")
        expect = (int(first), int(last))
    try:
        report = verify_bundle(args.bundle, keys, origin=args.origin, expect_seq=expect)
    except AuditVerifyError as exc:
        print(f"FAILED: {exc}")
        return 1
    fingerprints = ", ".join(f"sha256:{key_fingerprint(k)}" for k in keys)
    print(
        f"OK: {report.entries} entries (seq {report.first_seq}-{report.last_seq}) verified against the"
        f" signed checkpoint of {report.checkpoint_size} entries (origin {report.origin});"
        f" {report.checkpoints} checkpoints consistent;"
        f" signing keys {fingerprints}"
    )
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    return run_policy(args, load_config)


def cmd_sandbox(args: argparse.Namespace) -> int:
    return run_sandbox(args, load_config)


def cmd_models(args: argparse.Namespace) -> int:
    return run_models(args, load_config)


def cmd_explain(args: argparse.Namespace) -> int:
    return run_explain(args, load_config)


def cmd_worker(args: argparse.Namespace) -> int:
    return run_worker(args, load_config)


COMMANDS = {
    "init": cmd_init,
    "serve": cmd_serve,
    "keys": cmd_keys,
    "audit": cmd_audit,
    "policy": cmd_policy,
    "sandbox": cmd_sandbox,
    "models": cmd_models,
    "explain": cmd_explain,
    "worker": cmd_worker,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ApiError) as exc:
        _err(f"llmos: error: {exc}")
        return 2
    except LlmosError as exc:
        _err(f"llmos: error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
