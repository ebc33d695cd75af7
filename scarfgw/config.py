"""Load a scarfgw config (YAML, or a scarf-gateway manifest JSON) into a frozen Config.

Every error names the file, the key path (``rules[3].incoming-path``) and the reason.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from scarfgw.analytics.sinks import sink_factories
from scarfgw.rules.base import Rule
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.manifest import parse_rules
from scarfgw.rules.router import Router
from scarfgw.runtime.endpoints import parse_tcp_endpoint
from scarfgw.tls.owncerts import OwnCertificate, OwnCertificateError, load_own_certificate

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@dataclass(frozen=True)
class ProxyConfig:
    """How the gateway reaches backends."""

    upstreams: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    max_connections_per_host: int = 64
    max_redirects: int = 10
    ca_bundle: str | None = None


@dataclass(frozen=True)
class AcmeConfig:
    """The ACME CA scarfgw orders certificates from."""

    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    contact: str | None = None
    ca_bundle: str | None = None
    challenge: str = "http-01"


@dataclass(frozen=True)
class VerificationConfig:
    """How domain ownership is proved before any certificate order."""

    mode: str = "txt"
    secret: str | None = None
    resolver: str | None = None


@dataclass(frozen=True)
class TLSConfig:
    """Certificate storage, ACME and ownership verification."""

    storage: str = "var/tls"
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    # Operator certificates; a reload applies them, so they never ask for a restart.
    certificates: tuple[OwnCertificate, ...] = field(default=(), compare=False)


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


@dataclass(frozen=True)
class AccessLogConfig:
    """The optional access log (off by default; ``sample`` is the fraction logged)."""

    enabled: bool = False
    sample: float = 1.0


@dataclass(frozen=True)
class LimitsConfig:
    """Edge limits for client requests."""

    max_body_bytes: int = 65536


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
    workers: int = 1
    shutdown_grace_period: float = 30.0
    warnings: tuple[str, ...] = ()


def load_config(path: str) -> Config:
    """Read and validate the config file at ``path``; raise :class:`ConfigError`."""
    data = _read_document(path)
    return parse_config(data, path)


def _read_document(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = _parse_document(handle.read())
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not UTF-8 text: {exc.reason}") from None
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


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_document(text: str) -> Any:
    """JSON documents (manifests) with the json module, which is a hundred times faster than
    YAML on a large manifest; everything else as YAML (libyaml's loader when available)."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return yaml.load(text, Loader=_YAML_LOADER)


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate an already-parsed document; ``source`` names it in errors."""
    warnings: list[str] = []
    try:
        top = Fields(data, "", preread=())
        listen = _listen(top)
        trusted = _trusted_proxies(top)
        rules = _rules(top, source, warnings.append)
        proxy = _proxy(top)
        tls = _tls(top)
        events = _events(top)
        limits = _limits(top)
        access_log = _access_log(top)
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
        router=Router(rules),
        proxy=proxy,
        tls=tls,
        events=events,
        limits=limits,
        access_log=access_log,
        workers=workers,
        shutdown_grace_period=grace,
        warnings=tuple(warnings),
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
    )
    section.reject_unknown()
    return listen


def _endpoint(section: Fields, key: str, default: str | None) -> str | None:
    if key not in section.data:
        section.used.add(key)
        return default
    value = section.optional_string(key)
    if value is not None and ":" not in value:
        raise section.error(
            key, f"expected a Twisted endpoint string like 'tcp:8080', got {value!r}"
        )
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


def _rules(top: Fields, source: str, warn: Callable[[str], None]) -> list[Rule]:
    rules = parse_rules(top.optional_list("rules") or [], "rules", warn)
    manifest = top.optional_string("manifest")
    if manifest is not None:
        manifest_path = os.path.join(os.path.dirname(os.path.abspath(source)), manifest)
        document = _read_document(manifest_path)
        items = document.get("rules")
        if items is None:
            raise ConfigError(manifest_path, "rules", "required key is missing")
        try:
            rules += parse_rules(items, "rules", lambda text: warn(f"{manifest_path}: {text}"))
        except RuleError as exc:
            raise ConfigError(manifest_path, exc.path, exc.reason) from None
    return rules


def _proxy(top: Fields) -> ProxyConfig:
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
        ca_bundle=_pem_file(section, "ca_bundle"),
    )
    section.reject_unknown()
    return proxy


def _tls(top: Fields) -> TLSConfig:
    section = _section(top, "tls")
    acme_section = _section(section, "acme")
    default_acme = AcmeConfig()
    challenge = acme_section.optional_string("challenge", default_acme.challenge) or ""
    if challenge not in ("http-01", "tls-alpn-01"):
        raise acme_section.error("challenge", f"expected http-01 or tls-alpn-01, got {challenge!r}")
    acme = AcmeConfig(
        directory=acme_section.optional_string("directory", default_acme.directory) or "",
        contact=acme_section.optional_string("contact"),
        ca_bundle=_pem_file(acme_section, "ca_bundle"),
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
        storage=section.optional_string("storage", TLSConfig.storage) or "",
        acme=acme,
        verification=verification,
        certificates=_own_certificates(section),
    )
    section.reject_unknown()
    return tls


def _own_certificates(section: Fields) -> tuple[OwnCertificate, ...]:
    """``tls.certificates``: ``[{cert: FILE, key: FILE}]``, each pair read and checked."""
    loaded = []
    for index, item in enumerate(section.optional_list("certificates") or []):
        if not isinstance(item, Mapping):
            raise section.error(f"certificates[{index}]", "expected a mapping {cert, key}")
        pair = Fields(item, section.at(f"certificates[{index}]"), preread=())
        cert_path, key_path = pair.string("cert"), pair.string("key")
        pair.reject_unknown()
        try:
            loaded.append(load_own_certificate(cert_path, key_path))
        except OwnCertificateError as exc:
            raise RuleError(pair.path, str(exc)) from None
    return tuple(loaded)


def _events(top: Fields) -> EventsConfig:
    section = _section(top, "events")
    default = EventsConfig()
    sinks = section.optional_list("sinks")
    try:
        sink_factories(default.sinks if sinks is None else sinks)
    except ValueError as exc:
        path, _, reason = str(exc).partition(": ")
        raise RuleError(path, reason) from None
    geoip = _section(section, "geoip")
    databases = tuple(geoip.optional_string_list("databases") or ())
    geoip.reject_unknown()
    events = EventsConfig(
        geoip_databases=databases,
        batch_size=section.positive_int("batch_size", default.batch_size),
        flush_interval=section.number("flush_interval", default.flush_interval),
        queue_limit=section.positive_int("queue_limit", default.queue_limit),
        spool_dir=section.optional_string("spool_dir", default.spool_dir) or "",
        spool_max_bytes=section.positive_int("spool_max_bytes", default.spool_max_bytes),
        sinks=default.sinks if sinks is None else tuple(sinks),
    )
    if events.queue_limit < events.batch_size:
        raise section.error("queue_limit", f"must be at least batch_size ({events.batch_size})")
    section.reject_unknown()
    return events


def _limits(top: Fields) -> LimitsConfig:
    section = _section(top, "limits")
    limits = LimitsConfig(
        max_body_bytes=section.positive_int("max_body_bytes", LimitsConfig.max_body_bytes),
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


def _pem_file(section: Fields, key: str) -> str | None:
    """A readable file holding at least one PEM certificate, or None."""
    path = section.optional_string(key)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise section.error(key, f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise section.error(key, f"{path} holds no PEM certificate")
    return path


def _host_port(section: Fields, key: str) -> str | None:
    """``host:port`` with a port number, or None."""
    value = section.optional_string(key)
    if value is None:
        return None
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise section.error(key, f"expected host:port, got {value!r}")
    return value
