"""The ``scarfgw`` command: ``check-config FILE``, ``domain-token DOMAIN --config FILE``,
``token`` (a new insights API token and its hash), ``stats`` (insights as a table),
``example-config`` (the shipped example files) and ``--version``."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.resources
import re
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from scarfgw import __version__
from scarfgw.config import Config, ConfigError, load_config
from scarfgw.insights.model import Breakdown
from scarfgw.insights.stats import period, stats
from scarfgw.insights.tokens import new_token
from scarfgw.rules import router
from scarfgw.tls.verify import expected_value, record_name


def _summary(config: Config) -> str:
    kinds = Counter(rule.rule_type for rule in config.rules)
    listen = config.listen
    lines = [
        f"{config.source}: OK",
        f"  domains: {len(config.router.domains)}",
        f"  rules: {len(config.rules)}"
        + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")" if kinds else ""),
        f"  listen: http={listen.http} https={listen.https} admin={listen.admin}"
        f" insights={listen.insights}",
        f"  insights: {config.insights.engine}, {len(config.insights.tokens)} token(s)",
        f"  event sinks: {', '.join(str(s.get('type')) for s in config.events.sinks) or 'none'}",
    ]
    lines += [f"  warning: {warning}" for warning in config.warnings]
    return "\n".join(lines)


def _load(path: str) -> Config | None:
    """The config at ``path``, or None once its error is printed."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def check_config(path: str) -> int:
    """Validate ``path`` and print a summary (exit status 0) or the error (exit status 1)."""
    config = _load(path)
    if config is None:
        return 1
    print(_summary(config))
    return 0


def domain_token(domain: str, path: str) -> int:
    """Print the TXT record the owner of ``domain`` must publish."""
    config = _load(path)
    if config is None:
        return 1
    secret = config.tls.verification.secret
    if not secret:
        print(f"error: {path}: tls.verification.secret is not set", file=sys.stderr)
        return 1
    print(f'{record_name(domain)}. TXT "{expected_value(secret, domain)}"')
    return 0


def report_stats(path: str, package_id: str | None, by: Breakdown | None, since: str) -> int:
    """Print the downloads and unique networks per package (and ``by`` key) over ``since``,
    from the insights of the config at ``path`` (:mod:`scarfgw.insights.stats`)."""
    try:
        start, end = period(since, datetime.now(UTC).date())
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 1
    config = _load(path)
    if config is None:
        return 1
    return stats(config.source, config.rules, config.insights, config.listen.insights,
                 package_id, by, start, end)


EXAMPLES = {
    "config": "scarfgw.yaml",
    "systemd": "scarfgw.service",
    "logrotate": "scarfgw.logrotate",
}


def example_file(kind: str, data_dir: str | None = None) -> str:
    """The text of a shipped example: the config, the systemd unit or the logrotate file.

    The example config's data paths are ``var/...``, relative to the config file's folder;
    with ``data_dir`` they name that folder instead (``/var/lib/scarfgw/events.jsonl``)."""
    text = (importlib.resources.files("scarfgw") / "etc" / EXAMPLES[kind]).read_text("utf-8")
    if data_dir is None:
        return text
    return _DATA_PATH.sub(lambda found: found[1] + data_dir.rstrip("/") + "/", text)


_DATA_PATH = re.compile(r"((?:path|spool_dir|storage): )var/")
"""A data path of the example config (``var/`` relative to the config file)."""


def version() -> str:
    """``scarfgw X.Y.Z`` and whether the request path runs compiled (mypyc) or as Python."""
    compiled = router.__file__ is not None and router.__file__.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return f"scarfgw {__version__} ({'compiled with mypyc' if compiled else 'pure Python'})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scarfgw`` console script."""
    parser = argparse.ArgumentParser(
        prog="scarfgw",
        description="scarfgw tools. Run the gateway itself with: twistd -n scarfgw --config FILE",
    )
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a config file and summarise it")
    check.add_argument("file")
    token = commands.add_parser("domain-token",
                                help="print the ownership TXT record for a domain")
    token.add_argument("domain")
    token.add_argument("--config", required=True, help="config file holding the secret")
    commands.add_parser("token", help="print a new insights API token and the sha256 to put "
                        "in insights.tokens")
    report = commands.add_parser(
        "stats", help="print download statistics from the configured insights engine",
        description="Downloads and unique networks per package (or per version, client, ...) "
        "over the --since period, from the configured engine, as the API counts them. With "
        "DuckDB the store is opened read-only, which works while the gateway "
        "is stopped; while it runs (it holds the file), ask its API instead: set "
        "SCARFGW_TOKEN to a token and the numbers come from listen.insights.")
    report.add_argument("--config", required=True, help="the gateway's config file")
    report.add_argument("--package", help="one package id (default: every package)")
    report.add_argument("--by", choices=["version", "client", "country", "company", "domain",
                                         "type"], help="split the downloads by this")
    report.add_argument("--since", default="30d",
                        help="how far back: 30d, 12w, 6m or 1y (default 30d)")
    example = commands.add_parser(
        "example-config", help="print the example config (or the systemd unit, logrotate file)")
    example.add_argument("kind", nargs="?", choices=sorted(EXAMPLES), default="config",
                         help="which file: config (default), systemd or logrotate")
    example.add_argument("--data-dir", help="the config's folder for its data (events, spool, "
                         "insights store, TLS storage) instead of var/ next to the config file")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "example-config":
        sys.stdout.write(example_file(args.kind, args.data_dir))
        return 0
    if args.command == "token":
        value, digest = new_token()
        print(f"token:  {value}\nsha256: {digest}")
        return 0
    if args.command == "stats":
        return report_stats(args.config, args.package, args.by, args.since)
    return domain_token(args.domain, args.config)


if __name__ == "__main__":
    sys.exit(main())
