"""``llmos explain``: read and check explanation records on the gateway's host (offline).

    llmos explain show ID [--json | --html FILE] [--no-color]
    llmos explain verify [ID ...]

``show`` prints one request's record with its prompt tokens coloured by attribution (or JSON,
or writes the self-contained heatmap page a reviewer can open). ``verify`` checks records (all,
or the ids given): each must be readable and unaltered, and committed by its audit entry (phase
``explanation``, whose ``response_digest`` is the record's digest). The audit log itself is
checked by ``llmos audit verify`` (its chain, signatures and checkpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explain.errors import ExplanationError
from explain.render import html_page, render_terminal
from explain.store import ExplanationStore
from gateway.audit.source import audit_file
from gateway.audit.store import AuditStore
from gateway.config import Config
from gateway.errors import AuditError, ConfigError

ConfigLoader = Callable[[Path | None], Config]


def add_explain_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    explain = sub.add_parser(
        "explain", help="explanation records: show one, verify them against the audit log"
    ).add_subparsers(dest="explain_command", required=True)
    p = explain.add_parser("show", help="one request's explanation: evidence and coloured token attributions")
    add_config(p)
    p.add_argument("request_id", help="the request's id (its x-request-id header)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained heatmap page to FILE")
    p.add_argument("--no-color", action="store_true", help="plain text with the scores written out")
    p = explain.add_parser(
        "verify", help="check records are unaltered and committed by their audit entries (all, or IDs)"
    )
    add_config(p)
    p.add_argument("request_ids", nargs="*", help="only these requests (default: every record)")


def run_explain(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    config = load_config(args.config)
    path = config.explanations_db
    if not path.exists():
        raise ConfigError(f"no explanation records at {path} (has the gateway served requests?)")
    with ExplanationStore(path) as store:
        if args.explain_command == "show":
            return _show(store, args)
        with audit_file(config) as audit_db:
            return _verify(store, audit_db, args.request_ids)


def _show(store: ExplanationStore, args: argparse.Namespace) -> int:
    stored = store.get(args.request_id)
    if stored is None:
        print(f"llmos: no explanation record for {args.request_id}", file=sys.stderr)
        return 1
    if args.html is not None:
        args.html.write_text(html_page(stored.record), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    elif args.json:
        print(json.dumps({"digest": stored.digest, "record": stored.record.to_json()}, indent=2))
    else:
        color = not args.no_color and sys.stdout.isatty()
        print(render_terminal(stored.record, color=color))
    return 0


def _verify(store: ExplanationStore, audit_db: Path, ids: list[str]) -> int:
    try:
        audit = AuditStore.open_readonly(audit_db)
    except AuditError as exc:
        raise ConfigError(f"audit log {audit_db}: {exc}") from exc
    bad = 0
    try:
        wanted = ids or store.request_ids()
        for request_id in wanted:
            problem = _problem(store, audit, request_id)
            if problem is not None:
                bad += 1
                print(f"FAIL {request_id}: {problem}")
    finally:
        audit.close()
    if bad:
        print(f"{bad} of {len(wanted)} explanation records failed")
        return 1
    print(f"OK: {len(wanted)} explanation records unaltered, each committed by its audit entry")
    return 0


def _problem(store: ExplanationStore, audit: AuditStore, request_id: str) -> str | None:
    try:
        stored = store.get(request_id)
    except ExplanationError as exc:
        return str(exc)
    if stored is None:
        return "no record"
    entry = audit.get(request_id, "explanation")
    if entry is None:
        return "no audit entry commits it"
    try:
        body = json.loads(entry.body)
    except (TypeError, ValueError):
        return f"its audit entry (seq {entry.seq}) is unreadable"
    if body.get("response_digest") != stored.digest:
        return f"its audit entry (seq {entry.seq}) commits another digest: the record was altered"
    return None
