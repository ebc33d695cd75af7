"""Load a scarfgw config (YAML, or a scarf-gateway manifest JSON) into a frozen Config.

Every error names the file, the key path (``rules[3].incoming-path``) and the reason. A key
repeated in one mapping is an error (YAML would keep the last one silently). Relative paths
(``manifest``, sinks, the spool, TLS storage, PEM files, GeoIP databases) are relative to the
config file's folder. Reading (:func:`read_documents`) and validating
(:func:`parse_documents`) are apart: the primary process reads the files (the config, the
manifest and the files the config names: PEM files, GeoIP overrides), and its workers
validate the same documents and contents it hands them, opening none of those files.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import yaml

from scarfgw.analytics.companies import CompanyOverrides, parse_overrides
from scarfgw.analytics.sinks import sink_factories
from scarfgw.gateway.clientinfo import IPNetwork
from scarfgw.gateway.settings import ProxyConfig
from scarfgw.http.endpoints import listener_url, parse_tcp_endpoint, validate_endpoint
from scarfgw.insights.settings import InsightsConfig, jsonl_sink_paths, parse_insights
from scarfgw.rules.base import Rule
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.router import Router
from scarfgw.tls.certs import PemFile
from scarfgw.tls.owncerts import OwnCertificate, OwnCertificateError, load_own_certificate
from scarfgw.tls.settings import AcmeConfig, TLSConfig, VerificationConfig


class ConfigError(Exception):
    """A config file is unusable: ``source`` file, ``path`` inside it, ``reason``."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        super().__init__(f"{source}: {path}: {reason}" if path else f"{source}: {reason}")
        self.source = source
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ListenConfig:
    """Twisted server endpoint strings; ``None`` disables a listener."""

    http: str | None = "tcp:8080"
    https: str | None = None
    admin: str | None = "tcp:9180:interface=127.0.0.1"
    insights: str | None = "tcp:9190:interface=127.0.0.1"


@dataclass(frozen=True)
class EventsConfig:
    """The analytics writer: batching, queueing, spooling and sinks."""

    batch_size: int = 500
    flush_interval: float = 1.0
    queue_limit: int = 100_000
    spool_dir: str = "var/spool"
    spool_max_bytes: int = 1 << 30
    sinks: tuple[Mapping[str, Any], ...] = ({"type": "jsonl", "path": "var/events.jsonl"},)
    geoip_databases: tuple[str, ...] = ()
    geoip_overrides: CompanyOverrides | None = None


@dataclass(frozen=True)
class AccessLogConfig:
    """The optional access log (off by default; ``sample`` is the fraction logged)."""

    enabled: bool = False
    sample: float = 1.0


@dataclass(frozen=True)
class LimitsConfig:
    """Edge limits for client connections and requests.

    ``max_connections`` is per listener and process (one more is closed at once);
    ``client_timeout`` is how long a connection may stay idle, take to send one request, or
    leave its pending response unread; ``listen_backlog`` is the kernel's queue of
    connections not yet accepted.
    """

    max_body_bytes: int = 65536
    max_connections: int = 10_000
    client_timeout: float = 60.0
    listen_backlog: int = 1024


@dataclass(frozen=True)
class ConfigDocuments:
    """What a config was built from: the parsed file, the manifest it names (read along),
    the folder that relative paths are relative to, and the content of the other files it
    names (resolved path -> bytes, see :func:`read_documents`). Plain data, to hand to
    workers."""

    source: str
    folder: str
    main: Mapping[str, Any]
    manifest: Mapping[str, Any] | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)

    def resolve(self, path: str) -> str:
        """``path`` relative to the config file's folder (absolute paths stay)."""
        return os.path.join(self.folder, os.path.expanduser(path))

    def read(self, path: str) -> bytes:
        """The content of the file at the resolved ``path``: as read along with the
        documents, else read now (OSError when it cannot be)."""
        content = self.files.get(path)
        if content is None:
            with open(path, "rb") as handle:
                content = handle.read()
        return content


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration with its compiled router."""

    source: str
    listen: ListenConfig
    trusted_proxies: tuple[IPNetwork, ...]
    rules: tuple[Rule, ...]
    router: Router
    proxy: ProxyConfig
    tls: TLSConfig
    events: EventsConfig
    limits: LimitsConfig
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    insights: InsightsConfig = field(default_factory=InsightsConfig)
    workers: int = 1
    shutdown_grace_period: float = 30.0
    warnings: tuple[str, ...] = ()
    documents: ConfigDocuments | None = field(default=None, compare=False, repr=False)


def load_config(path: str) -> Config:
    """Read and validate the config file at ``path``; raise :class:`ConfigError`."""
    return parse_documents(read_documents(path))


def read_documents(path: str) -> ConfigDocuments:
    """Read the config file at ``path`` and the manifest it names; raise :class:`ConfigError`
    when a file is unreadable or not YAML/JSON."""
    data = _read_document(path)
    folder = os.path.dirname(os.path.abspath(path))
    documents = ConfigDocuments(path, folder, data, _read_manifest(data, folder))
    files = {}
    for named in _named_files(data):
        resolved = documents.resolve(named)
        with contextlib.suppress(OSError):  # the validation reads it again, reporting why not
            files[resolved] = documents.read(resolved)
    return replace(documents, files=files)


def _named_files(data: Mapping[str, Any]) -> list[str]:
    """The paths, as written, of the files besides the manifest that ``data`` names (PEM
    files, GeoIP overrides); what is not a string where a path belongs is left to the
    validation."""
    def part(mapping: Any, key: str) -> Any:
        return mapping.get(key) if isinstance(mapping, Mapping) else None

    tls = part(data, "tls")
    pairs = part(tls, "certificates")
    places = [(part(data, "proxy"), "ca_bundle"), (part(tls, "acme"), "ca_bundle"),
              (part(part(data, "events"), "geoip"), "overrides")]
    for pair in pairs if isinstance(pairs, list) else ():
        places += [(pair, "cert"), (pair, "key")]
    return [path for mapping, key in places if isinstance(path := part(mapping, key), str)]


def _read_manifest(data: Mapping[str, Any], folder: str) -> Mapping[str, Any] | None:
    manifest = data.get("manifest")
    if not isinstance(manifest, str):
        return None  # absent, or reported as a bad value by the validation
    return _read_document(os.path.join(folder, manifest))


def _read_document(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = _parse_document(handle.read())
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text: {exc.reason}") from None
    except _DuplicateKey as exc:
        raise ConfigError(path, "", str(exc)) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        position = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, "", f"invalid YAML/JSON: {position}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, "", "the top level must be a mapping of sections")
    return data


class _DuplicateKey(ValueError):
    """A mapping names the same key twice."""


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when available) refusing keys repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                mark = key_node.start_mark
                raise _DuplicateKey(f"line {mark.line + 1}, column {mark.column + 1}: "
                                    f"key {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key it names twice."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateKey(f"key {key!r} appears twice in one object")
        mapping[key] = value
    return mapping


def _parse_document(text: str) -> Any:
    """JSON documents (manifests) with the json module, which is a hundred times faster than
    YAML on a large manifest; everything else as YAML (libyaml's loader when available)."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs)
        except _DuplicateKey:
            raise
        except ValueError:
            pass
    return yaml.load(text, Loader=_StrictLoader)


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate an already-parsed document; ``source`` names it in errors and its folder
    is where relative paths start (the manifest it names is read from there)."""
    folder = os.path.dirname(os.path.abspath(source))
    try:
        manifest = _read_manifest(data, folder)
    except ConfigError:
        manifest = None  # reported with its key path by the validation
    return parse_documents(ConfigDocuments(source, folder, data, manifest))


def parse_documents(documents: ConfigDocuments) -> Config:
    """Validate documents read by :func:`read_documents` (reading no config file)."""
    warnings: list[str] = []
    source = documents.source
    try:
        top = Fields(documents.main, "", preread=())
        listen = _listen(top)
        trusted = _trusted_proxies(top)
        rules = _rules(top, documents, warnings.append)
        proxy = _proxy(top, documents)
        tls = _tls(top, documents)
        events = _events(top, documents)
        limits = _limits(top)
        access_log = _access_log(top)
        insights = parse_insights(top, jsonl_sink_paths(events.sinks), listen.insights is not None,
                                  documents.resolve)
        router = Router(rules)
        _check_insights_domain(listen, insights, router)
        _check_tls_needs(listen, tls)
        grace = top.number("shutdown_grace_period", Config.shutdown_grace_period)
        workers = _workers(top, listen, warnings.append)
        top.reject_unknown()
    except RuleError as exc:
        raise ConfigError(source, exc.path, exc.reason) from None
    return Config(
        source=source,
        listen=listen,
        trusted_proxies=trusted,
        rules=tuple(rules),
        router=router,
        proxy=proxy,
        tls=tls,
        events=events,
        limits=limits,
        access_log=access_log,
        insights=insights,
        workers=workers,
        shutdown_grace_period=grace,
        warnings=tuple(warnings),
        documents=documents,
    )


def _section(top: Fields, key: str) -> Fields:
    return Fields(top.optional_mapping(key) or {}, top.at(key), preread=())


def _listen(top: Fields) -> ListenConfig:
    section = _section(top, "listen")
    default = ListenConfig()
    listen = ListenConfig(
        http=_endpoint(section, "http", default.http),
        https=_endpoint(section, "https", default.https),
        admin=_endpoint(section, "admin", default.admin),
        insights=_endpoint(section, "insights", default.insights),
    )
    section.reject_unknown()
    return listen


def _endpoint(section: Fields, key: str, default: str | None) -> str | None:
    if key not in section.data:
        section.used.add(key)
        return default
    value = section.optional_string(key)
    if value is not None:
        try:
            validate_endpoint(value)
        except ValueError as exc:
            raise section.error(key, str(exc)) from None
    return value


def _trusted_proxies(top: Fields) -> tuple[IPNetwork, ...]:
    if "trusted_proxies" not in top.data:
        top.used.add("trusted_proxies")
        return (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    networks = []
    for index, text in enumerate(top.optional_string_list("trusted_proxies") or []):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise RuleError(f"trusted_proxies[{index}]", f"not an IP network: {text!r}") from None
    return tuple(networks)


def _rules(top: Fields, documents: ConfigDocuments, warn: Callable[[str], None]
           ) -> list[Rule]:
    rules = parse_rules(top.optional_list("rules") or [], "rules", warn)
    manifest = top.optional_string("manifest")
    if manifest is not None:
        manifest_path = documents.resolve(manifest)
        document = documents.manifest
        if document is None:
            document = _read_document(manifest_path)
        items = document.get("rules")
        if items is None:
            raise ConfigError(manifest_path, "rules", "required key is missing")
        try:
            rules += parse_rules(items, "rules", lambda text: warn(f"{manifest_path}: {text}"))
        except RuleError as exc:
            raise ConfigError(manifest_path, exc.path, exc.reason) from None
    return rules


def _proxy(top: Fields, documents: ConfigDocuments) -> ProxyConfig:
    section = _section(top, "proxy")
    default = ProxyConfig()
    upstreams = dict(section.optional_mapping("upstreams") or {})
    for host, url in upstreams.items():
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuleError(
                f"{section.at('upstreams')}.{host}",
                f"expected an http:// or https:// base URL, got {url!r}",
            )
    proxy = ProxyConfig(
        upstreams=upstreams,
        connect_timeout=section.number("connect_timeout", default.connect_timeout),
        response_timeout=section.number("response_timeout", default.response_timeout),
        max_connections_per_host=section.positive_int(
            "max_connections_per_host", default.max_connections_per_host
        ),
        max_redirects=section.positive_int("max_redirects", default.max_redirects),
        ca_bundle=_pem_file(section, "ca_bundle", documents),
    )
    section.reject_unknown()
    return proxy


def _tls(top: Fields, documents: ConfigDocuments) -> TLSConfig:
    section = _section(top, "tls")
    acme_section = _section(section, "acme")
    default_acme = AcmeConfig()
    challenge = acme_section.optional_string("challenge", default_acme.challenge) or ""
    if challenge not in ("http-01", "tls-alpn-01"):
        raise acme_section.error("challenge", f"expected http-01 or tls-alpn-01, got {challenge!r}")
    acme = AcmeConfig(
        directory=acme_section.optional_string("directory", default_acme.directory) or "",
        contact=acme_section.optional_string("contact"),
        ca_bundle=_pem_file(acme_section, "ca_bundle", documents),
        challenge=challenge,
    )
    acme_section.reject_unknown()
    verify_section = _section(section, "verification")
    mode = verify_section.optional_string("mode", "txt") or ""
    if mode not in ("txt", "none"):
        raise verify_section.error("mode", f"expected txt or none, got {mode!r}")
    verification = VerificationConfig(
        mode=mode,
        secret=verify_section.optional_string("secret"),
        resolver=_host_port(verify_section, "resolver"),
    )
    verify_section.reject_unknown()
    tls = TLSConfig(
        storage=documents.resolve(section.optional_string("storage", TLSConfig.storage) or ""),
        session_tickets=section.boolean("session_tickets", TLSConfig.session_tickets),
        acme=acme,
        verification=verification,
        certificates=_own_certificates(section, documents),
    )
    section.reject_unknown()
    return tls


def _own_certificates(section: Fields, documents: ConfigDocuments
                      ) -> tuple[OwnCertificate, ...]:
    """``tls.certificates``: ``[{cert: FILE, key: FILE}]``, each pair read and checked
    (relative paths from the config file's folder)."""
    loaded = []
    for index, item in enumerate(section.optional_list("certificates") or []):
        if not isinstance(item, Mapping):
            raise section.error(f"certificates[{index}]", "expected a mapping {cert, key}")
        pair = Fields(item, section.at(f"certificates[{index}]"), preread=())
        cert_path, key_path = pair.string("cert"), pair.string("key")
        pair.reject_unknown()
        try:
            loaded.append(load_own_certificate(_read_pem(documents, cert_path),
                                              _read_pem(documents, key_path)))
        except OwnCertificateError as exc:
            raise RuleError(pair.path, str(exc)) from None
    return tuple(loaded)


def _events(top: Fields, documents: ConfigDocuments) -> EventsConfig:
    section = _section(top, "events")
    default = EventsConfig()
    sinks = section.optional_list("sinks")
    try:
        sink_factories(default.sinks if sinks is None else sinks)
    except ValueError as exc:
        path, _, reason = str(exc).partition(": ")
        raise RuleError(path, reason) from None
    geoip = _section(section, "geoip")
    databases = tuple(documents.resolve(path)
                      for path in geoip.optional_string_list("databases") or ())
    overrides_path = geoip.optional_string("overrides")
    overrides = None
    if overrides_path is not None:
        if not databases:
            raise geoip.error("overrides", "needs databases (the overrides refine them)")
        path = documents.resolve(overrides_path)
        try:
            overrides = parse_overrides(path, documents.read(path))
        except OSError as exc:
            raise geoip.error("overrides", f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise geoip.error("overrides", str(exc)) from None
    geoip.reject_unknown()
    events = EventsConfig(
        geoip_databases=databases,
        geoip_overrides=overrides,
        batch_size=section.positive_int("batch_size", default.batch_size),
        flush_interval=section.number("flush_interval", default.flush_interval),
        queue_limit=section.positive_int("queue_limit", default.queue_limit),
        spool_dir=documents.resolve(section.optional_string("spool_dir", default.spool_dir) or ""),
        spool_max_bytes=section.positive_int("spool_max_bytes", default.spool_max_bytes),
        sinks=tuple(_resolved_sink(sink, documents)
                    for sink in (default.sinks if sinks is None else sinks)),
    )
    if events.queue_limit < events.batch_size:
        raise section.error("queue_limit", f"must be at least batch_size ({events.batch_size})")
    section.reject_unknown()
    return events


def _limits(top: Fields) -> LimitsConfig:
    section = _section(top, "limits")
    limits = LimitsConfig(
        max_body_bytes=section.positive_int("max_body_bytes", LimitsConfig.max_body_bytes),
        max_connections=section.positive_int("max_connections", LimitsConfig.max_connections),
        client_timeout=section.number("client_timeout", LimitsConfig.client_timeout),
        listen_backlog=section.positive_int("listen_backlog", LimitsConfig.listen_backlog),
    )
    section.reject_unknown()
    return limits


def _access_log(top: Fields) -> AccessLogConfig:
    section = _section(top, "access_log")
    sample = section.number("sample", AccessLogConfig.sample)
    if sample > 1:
        raise section.error("sample", f"expected a fraction in (0, 1], got {sample}")
    access_log = AccessLogConfig(
        enabled=section.boolean("enabled", AccessLogConfig.enabled), sample=sample
    )
    section.reject_unknown()
    return access_log


def _check_tls_needs(listen: ListenConfig, tls: TLSConfig) -> None:
    if listen.https and tls.verification.mode == "txt" and not tls.verification.secret:
        raise RuleError(
            "tls.verification.secret",
            "required when listen.https is set and verification.mode is txt "
            "(the HMAC key of the ownership TXT records)",
        )


def _check_insights_domain(listen: ListenConfig, insights: InsightsConfig,
                           router: Router) -> None:
    if insights.domain in router.domains:
        raise RuleError("insights.domain", f"{insights.domain} is also a rule domain: the "
                        "insights site needs a domain of its own")
    if insights.domain and listener_url(listen.insights or "") is None:
        raise RuleError("insights.domain", "needs listen.insights to be a tcp:PORT (or "
                        "tcp6:PORT) endpoint with a fixed port (the public listeners hand the "
                        "domain to it)")


def _workers(top: Fields, listen: ListenConfig, warn: Callable[[str], None]) -> int:
    """``workers`` (default: the number of cores); several need shareable tcp listeners."""
    explicit = top.data.get("workers") is not None
    workers = top.positive_int("workers", os.cpu_count() or 1)
    if workers == 1:
        return 1
    for key in ("http", "https"):
        spec = getattr(listen, key)
        if spec is None:
            continue
        try:
            parse_tcp_endpoint(spec)
        except ValueError as exc:
            if explicit:
                raise RuleError(f"listen.{key}", f"{exc} (or set workers: 1)") from None
            warn(f"listen.{key}: {exc}; running one process (set workers: 1 to silence this)")
            return 1
    return workers


def _resolved_sink(sink: Mapping[str, Any], documents: ConfigDocuments) -> Mapping[str, Any]:
    """A sink spec whose file ``path`` (jsonl) is relative to the config file's folder."""
    path = sink.get("path")
    return {**sink, "path": documents.resolve(path)} if isinstance(path, str) else sink


def _pem_file(section: Fields, key: str, documents: ConfigDocuments) -> PemFile | None:
    """A readable file holding at least one PEM certificate, or None."""
    given = section.optional_string(key)
    if given is None:
        return None
    path = documents.resolve(given)
    try:
        text = documents.read(path)
    except OSError as exc:
        raise section.error(key, f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise section.error(key, f"{path} holds no PEM certificate")
    return PemFile(path, text)


def _read_pem(documents: ConfigDocuments, given: str) -> PemFile:
    """The file at ``given`` (from the config file's folder), read; OwnCertificateError
    when it cannot be."""
    path = documents.resolve(given)
    try:
        return PemFile(path, documents.read(path))
    except OSError as exc:
        raise OwnCertificateError(path, f"cannot read: {exc.strerror}") from None


def _host_port(section: Fields, key: str) -> str | None:
    """``host:port`` with a port number, or None."""
    value = section.optional_string(key)
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise section.error(key, f"expected host:port, got {value!r}")
    return value
