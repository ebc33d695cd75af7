"""npm-v1: a custom domain serves as an npm registry for configured packages and scopes. A
package document ("packument") request, ``/<name>``, ``/@scope%2fname`` or ``/@scope/name``,
becomes a :class:`~scarfgw.rules.decision.Proxy` that carries a
:class:`~scarfgw.rules.decision.PackumentFetch`: the shell fetches the document from the
backend registry, points the ``dist.tarball`` URLs that follow the registry layout
(``<backend>/<name>/-/<file>``) at the gateway, and answers it. A tarball request
``/<name>/-/<base>-<version>.tgz`` is a download: redirected (or, with ``always-proxy``,
proxied) to the same path under the backend.

Events: ``{"kind": "npm", "package", "name", "version", "target"}``; ``version`` and
``target`` are set for tarballs only.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.decision import Capture, Decision, PackumentFetch, Proxy, Redirect, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.request import RequestView

KIND: Final = "npm"
DEFAULT_MAX_PACKUMENT_BYTES: Final = 32 << 20
"""Largest backend packument accepted (the biggest public ones are a few tens of MiB)."""

_NAME: Final = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*")
_SCOPE: Final = re.compile(r"@[a-z0-9][a-z0-9._~-]*")
_VERSION: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.+-]*)?")
_MAX_NAME: Final = 214
_JSON: Final = (("Content-Type", "application/json"),)


def valid_name(name: str) -> bool:
    """Whether ``name`` is a well-formed npm package name (scoped or not)."""
    return len(name) <= _MAX_NAME and _NAME.fullmatch(name) is not None




class NpmBackend:
    """The backend registry: base URL, its ``host[:port]``, redirect or proxy tarballs, the
    packument size limit."""

    __slots__ = ("always_proxy", "max_packument_bytes", "netloc", "url")

    def __init__(self, url: str, always_proxy: bool, max_packument_bytes: int) -> None:
        self.url = url
        self.netloc = urlsplit(url).netloc
        self.always_proxy = always_proxy
        self.max_packument_bytes = max_packument_bytes


def split_request(segments: tuple[str, ...]) -> tuple[str, str | None] | None:
    """``(name, tarball file or None)`` of a registry path's decoded segments, else ``None``.

    ``("pkg",)``, ``("@s/pkg",)`` (``%2f`` decoded) and ``("@s", "pkg")`` name packuments;
    ``(<name pieces>, "-", file)`` names a tarball.
    """
    if len(segments) >= 3 and segments[-2] == "-":
        head, file = segments[:-2], segments[-1]
    else:
        head, file = segments, None
    if len(head) == 1:
        return head[0], file
    if len(head) == 2 and head[0].startswith("@") and "/" not in head[0]:
        return f"{head[0]}/{head[1]}", file
    return None


def tarball_version(name: str, file: str) -> str | None:
    """The version in ``<base>-<version>.tgz`` where base is the unscoped name, else None."""
    base = name.rpartition("/")[2]
    if not (file.startswith(base + "-") and file.endswith(".tgz")):
        return None
    version = file[len(base) + 1 : -4]
    return version if _VERSION.fullmatch(version) else None


class NpmRule(ListOrderRule):
    """npm-v1: the packuments and tarballs of ``packages`` and of every package in
    ``scopes``, counted under ``package_id``."""

    __slots__ = ("backend", "domain", "package_id", "packages", "scopes")

    rule_type = "npm-v1"

    def __init__(self, domain: str, package_id: str, backend: NpmBackend,
                 packages: frozenset[str], scopes: frozenset[str]) -> None:
        self.domain = domain
        self.package_id = package_id
        self.backend = backend
        self.packages = packages
        self.scopes = scopes

    def owns(self, name: str) -> bool:
        """Whether ``name`` is one of the rule's packages or lies in one of its scopes."""
        scope, slash, _ = name.partition("/")
        return name in self.packages or (bool(slash) and scope in self.scopes)

    def match(self, request: RequestView) -> Decision | None:
        """Packument fetch, tarball redirect/proxy, 400 for a malformed name in a scope."""
        if request.method not in ("GET", "HEAD"):
            return None
        found = split_request(request.segments)
        if found is None or not self.owns(found[0]):
            return None
        name, file = found
        if not valid_name(name):
            return Respond(400, KIND, _JSON, b'{"error":"malformed package name"}\n')
        backend = self.backend
        if file is None:
            path = "/" + name.replace("/", "%2f")
            fetch = PackumentFetch(name, path, backend.url, backend.max_packument_bytes)
            return Proxy(backend.netloc, KIND, self._capture(name, None, None),
                         packument=fetch)
        version = tarball_version(name, file)
        if version is None:
            return None
        target = f"{backend.url}/{name}/-/{file}"
        captures = self._capture(name, version, target)
        if backend.always_proxy:
            return Proxy(backend.netloc, KIND, captures, base_url=backend.url,
                         path=f"/{name}/-/{file}")
        return Redirect(target, KIND, captures)

    def _capture(self, name: str, version: str | None, target: str | None
                 ) -> tuple[Capture, ...]:
        return ({"kind": KIND, "package": self.package_id, "name": name, "version": version,
                 "target": target},)


def parse_npm_v1(fields: Fields) -> Rule:
    """Compile an ``npm-v1`` rule: ``domain``, ``package-id``, ``backend-url``, ``packages``
    and/or ``scopes``, ``always-proxy``, ``max-packument-bytes``."""
    packages = fields.optional_string_list("packages") or []
    for index, name in enumerate(packages):
        if not valid_name(name):
            raise fields.error(f"packages[{index}]", f"malformed npm package name {name!r}")
    scopes = fields.optional_string_list("scopes") or []
    for index, scope in enumerate(scopes):
        if _SCOPE.fullmatch(scope) is None:
            raise fields.error(f"scopes[{index}]",
                               f"expected a scope like '@example', got {scope!r}")
    if not packages and not scopes:
        raise fields.error("packages", "an npm-v1 rule needs 'packages' or 'scopes'")
    backend = NpmBackend(
        fields.base_url("backend-url"),
        always_proxy=fields.boolean("always-proxy", False),
        max_packument_bytes=fields.positive_int("max-packument-bytes",
                                                DEFAULT_MAX_PACKUMENT_BYTES),
    )
    return NpmRule(fields.string("domain"), fields.string("package-id"), backend,
                   frozenset(packages), frozenset(scopes))
