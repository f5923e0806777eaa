"""`llmos policy ...`: tools for policy authors (test, eval, replay, sign)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from gateway.audit.source import audit_file
from gateway.config import Config
from gateway.errors import ConfigError, PolicyError

ConfigLoader = Callable[[Path | None], Config]


def add_policy_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    policy = sub.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )

    p = policy.add_parser(
        "test", help="run the Rego unit tests (*_test.rego, rules named test_*) of a policy directory"
    )
    add_config(p)
    p.add_argument("dir", nargs="?", type=Path, help="policy directory (default: the configured one)")

    p = policy.add_parser(
        "eval",
        help="decide one input document and print the decision",
        description="Evaluate the decision query over an input document (see docs/policy.md for its shape).",
    )
    add_config(p)
    p.add_argument(
        "--input", required=True, type=Path, metavar="FILE", help="input document (JSON); - for stdin"
    )
    p.add_argument(
        "--phase", choices=("input", "output"), default="input", help="which decision (default: input)"
    )
    p.add_argument("--dir", type=Path, help="policy directory (default: the configured one)")
    p.add_argument(
        "--explain", action="store_true", help="also print every rule of the package that produced a value"
    )

    p = policy.add_parser(
        "replay",
        help="replay recorded decisions against a candidate policy set and list what would change",
        description=(
            "Replays the policy inputs kept in the audit trail (PII-free) against the policy set in"
            " --candidate, and lists every decision that would change: allow -> deny, deny -> allow,"
            " or different obligations. --markdown prints a table ready for a pull-request review."
        ),
    )
    add_config(p)
    p.add_argument("--candidate", required=True, type=Path, metavar="DIR", help="candidate policy directory")
    p.add_argument("--since", help="only decisions at or after this time (RFC 3339 or YYYY-MM-DD, UTC)")
    p.add_argument("--until", help="only decisions before this time (RFC 3339 or YYYY-MM-DD, UTC)")
    p.add_argument("--db", type=Path, help="audit database (default: the configured one)")
    p.add_argument("--markdown", action="store_true", help="print Markdown for a pull-request review")
    p.add_argument("--fail-on-change", action="store_true", help="exit 1 when any decision would change")

    p = policy.add_parser(
        "sign",
        help="sign a policy directory (writes DIR/.signature) for gateways that set policy.public_key",
        description=(
            "Writes DIR/.signature: an Ed25519 signature over the policy set's digest. Gateways with"
            " policy.public_key set refuse policy sets whose signature is missing or wrong."
        ),
    )
    add_config(p)
    p.add_argument(
        "--key", required=True, type=Path, metavar="PEM", help="Ed25519 private key (PKCS#8 PEM, mode 0600)"
    )
    p.add_argument("dir", nargs="?", type=Path, help="policy directory (default: the configured one)")


def run_policy(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    if args.policy_command == "test":
        return _test(args, load_config)
    if args.policy_command == "eval":
        return _eval(args, load_config)
    if args.policy_command == "sign":
        return _sign(args, load_config)
    return _replay(args, load_config)


def _sign(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from gateway.policy.signing import sign_bundle

    root = args.dir or load_config(args.config).policy_dir
    digest = sign_bundle(root, args.key)
    print(f"signed {digest} -> {root / '.signature'}", file=sys.stderr)
    return 0


def _engine(config: Config, root: Path) -> Any:
    from gateway.policy.bundle import load_bundle
    from gateway.policy.engine import RegoEngine

    return RegoEngine(load_bundle(root), config.policy.query, config.policy.output_query)


def _test(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from gateway.policy.bundle import load_bundle
    from gateway.policy.testcache import PassedTests
    from gateway.policy.testing import run_policy_tests

    config = None if args.dir else load_config(args.config)
    root = args.dir if config is None else config.policy_dir
    bundle = load_bundle(root)
    results = run_policy_tests(bundle)
    if config is not None and all(r.passed for r in results):
        PassedTests(config.state_dir / "policy-tests.json").record(bundle.digest)  # serve need not re-test
    for r in results:
        print(
            f"{'PASS' if r.passed else 'FAIL'}  {r.file}: {r.name}" + ("" if r.passed else f"  ({r.error})")
        )
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _read_json(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from exc


def _eval(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from gateway.pipeline import obligations_document

    config = load_config(args.config)
    engine = _engine(config, args.dir or config.policy_dir)
    document = _read_json(args.input)
    if not isinstance(document, dict):
        raise ConfigError(f"{args.input}: the input document must be a JSON object")
    try:
        decision = engine.decide(document, args.phase)
    except PolicyError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": str(exc)}}, indent=2))
        return 1
    print(
        json.dumps(
            {
                "allow": decision.allow,
                "reasons": [{"code": r.code, "message": r.message} for r in decision.reasons],
                "obligations": obligations_document(decision.obligations),
                "evidence": [{"rule": e.rule, "detail": e.detail} for e in decision.evidence],
            },
            indent=2,
        )
    )
    if args.explain:
        query = config.policy.query if args.phase == "input" else (config.policy.output_query or "")
        package = query.rsplit(".", 1)[0]
        rules = engine.evaluate(package, document)
        print(f"\n# rules of {package} that produced a value for this input:")
        for name, value in sorted(rules.items()):
            if name in ("cfg", "decision") or value in (None, False, [], {}):
                continue
            print(f"{name} = {json.dumps(value)}")
    return 0


def _replay(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from gateway.policy.replay import parse_time, read_audit, recorded_decisions, render_markdown, render_text
    from gateway.policy.replay import replay as run_replay

    config = load_config(args.config)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: not an RFC 3339 time or date: {exc}") from exc
    candidate = _engine(config, args.candidate)
    with ExitStack() as stack:
        db = args.db or stack.enter_context(audit_file(config))  # a pulled copy of a shared log
        if not db.exists():
            raise ConfigError(f"{db}: no audit database here")
        report = run_replay(recorded_decisions(read_audit(db), since=since, until=until), candidate)
    print(render_markdown(report, str(args.candidate)) if args.markdown else render_text(report))
    return 1 if args.fail_on_change and report.changes else 0
