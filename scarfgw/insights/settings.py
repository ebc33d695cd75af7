"""The ``insights:`` config section (design.md "Insights"): engine, store, tokens, badges.

Pure validation (no I/O): :func:`parse_insights` reads the section through
:class:`~scarfgw.rules.fields.Fields`, so errors name the key path
(``insights.tokens[1].sha256``) like every other config error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.request import normalize_domain

ENGINES = ("duckdb", "clickhouse")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MEMORY = re.compile(r"[1-9][0-9]{0,5}(MB|GB)")


@dataclass(frozen=True)
class TokenConfig:
    """One API token: a name for logs, the SHA-256 of the token (hex) and its package ids."""

    name: str
    sha256: str
    packages: frozenset[str]


@dataclass(frozen=True)
class ClickHouseConfig:
    """Where the ``http`` sink's table lives."""

    url: str = "http://127.0.0.1:8123"
    database: str = "default"
    table: str = "scarfgw_events"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0


@dataclass(frozen=True)
class InsightsConfig:
    """The read side: which engine answers, who may read, what is public."""

    engine: str = "duckdb"
    duckdb_path: str = "var/insights.duckdb"
    duckdb_threads: int = 1
    duckdb_memory_limit: str = "1GB"
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    tokens: tuple[TokenConfig, ...] = ()
    badges: bool = True
    domain: str | None = None


def parse_insights(top: Fields, jsonl_paths: Sequence[str], enabled: bool,
                   resolve: Callable[[str], str]) -> InsightsConfig:
    """The ``insights`` section of ``top``; ``jsonl_paths`` are the JSONL sinks' files (the
    DuckDB engine follows them, so it needs one when insights is ``enabled``); ``resolve``
    makes a relative path start at the config file's folder."""
    section = Fields(top.optional_mapping("insights") or {}, top.at("insights"), preread=())
    default = InsightsConfig()
    engine = section.optional_string("engine", default.engine) or ""
    if engine not in ENGINES:
        raise section.error("engine", f"expected duckdb or clickhouse, got {engine!r}")
    store = Fields(section.optional_mapping("duckdb") or {}, section.at("duckdb"), preread=())
    duckdb_path = store.optional_string("path", default.duckdb_path) or default.duckdb_path
    duckdb_threads = store.positive_int("threads", default.duckdb_threads)
    memory_limit = store.optional_string("memory_limit", default.duckdb_memory_limit) or ""
    if not _MEMORY.fullmatch(memory_limit):
        raise store.error("memory_limit", f"expected a size like 512MB or 2GB, got "
                                          f"{memory_limit!r}")
    store.reject_unknown()
    if engine == "duckdb" and enabled and not jsonl_paths:
        raise section.error("engine", "duckdb follows the JSONL sink files: add a "
                            "{type: jsonl} sink to events.sinks, or use clickhouse")
    insights = InsightsConfig(
        engine=engine,
        duckdb_path=resolve(duckdb_path),
        duckdb_threads=duckdb_threads,
        duckdb_memory_limit=memory_limit,
        clickhouse=_clickhouse(section),
        tokens=_tokens(section),
        badges=section.boolean("badges", default.badges),
        domain=_domain(section),
    )
    section.reject_unknown()
    return insights


def _clickhouse(section: Fields) -> ClickHouseConfig:
    fields = Fields(section.optional_mapping("clickhouse") or {}, section.at("clickhouse"),
                    preread=())
    default = ClickHouseConfig()
    url = fields.optional_string("url", default.url) or default.url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fields.error("url", f"expected an http:// or https:// URL, got {url!r}")
    names = {}
    for key in ("database", "table"):
        value = fields.optional_string(key, getattr(default, key)) or ""
        if not _IDENTIFIER.fullmatch(value):
            raise fields.error(key, f"expected a plain identifier, got {value!r}")
        names[key] = value
    headers = dict(fields.optional_mapping("headers") or {})
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise fields.error("headers", "names and values must be strings")
    config = ClickHouseConfig(url=url.rstrip("/"), database=names["database"],
                              table=names["table"], headers=headers,
                              timeout=fields.number("timeout", default.timeout))
    fields.reject_unknown()
    return config


def _tokens(section: Fields) -> tuple[TokenConfig, ...]:
    tokens = []
    names: set[str] = set()
    for index, item in enumerate(section.optional_list("tokens") or []):
        where = f"{section.at('tokens')}[{index}]"
        if not isinstance(item, Mapping):
            raise RuleError(where, f"expected a mapping, got {item!r}")
        fields = Fields(item, where, preread=())
        name = fields.string("name")
        if name in names:
            raise fields.error("name", f"{name!r} is already used by another token")
        names.add(name)
        digest = fields.string("sha256").lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise fields.error("sha256", "expected 64 hex digits: the SHA-256 of the token "
                               "(`scarfgw token` prints a new token and its hash)")
        packages = fields.optional_string_list("packages")
        if not packages:
            raise fields.error("packages", "expected a non-empty list of package ids ('*': all)")
        fields.reject_unknown()
        tokens.append(TokenConfig(name, digest, frozenset(packages)))
    return tuple(tokens)


def _domain(section: Fields) -> str | None:
    domain = section.optional_string("domain")
    if domain is not None and (not domain or "/" in domain or ":" in domain or " " in domain):
        raise section.error("domain", f"expected a host name, got {domain!r}")
    return normalize_domain(domain) if domain else None


def jsonl_sink_paths(sinks: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The files of the ``jsonl`` sinks of an ``events.sinks`` list (validated already)."""
    return tuple(str(spec["path"]) for spec in sinks if spec.get("type") == "jsonl")
