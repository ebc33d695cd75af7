"""The gateway's typed settings (the ``proxy`` section), built by :mod:`scarfgw.config`.

Plain data, apart from the proxy: the config is loaded before prometheus-client may be
imported (with several workers, ``twistd scarfgw`` sets the shared metrics directory first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scarfgw.tls.certs import PemFile


@dataclass(frozen=True)
class ProxyConfig:
    """How the gateway reaches backends."""

    upstreams: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    max_connections_per_host: int = 64
    max_redirects: int = 10
    ca_bundle: PemFile | None = None
