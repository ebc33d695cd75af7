"""go-v1: the GOPROXY protocol for the modules under a configured module path.

Requests ``/<module>/@v/list``, ``/<module>/@v/<version>.info|.mod|.zip`` and
``/<module>/@latest`` (module and version in Go's case encoding, ``!x`` for ``X``) are
redirected, or with ``always-proxy`` proxied, to the same path under the backend module
proxy (percent-escapes decoded: ``go`` sends ``!`` as ``%21``). A ``.zip`` is a download.

Events: ``{"kind": "go", "package", "module", "version", "file"}`` with ``file`` one of
``zip``, ``mod``, ``info``, ``list``, ``latest`` and ``version`` null for the last two.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.decision import Capture, Decision, Proxy, Redirect, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.request import RequestView

KIND: Final = "go"
_ESCAPED_PATH: Final = re.compile(r"(?:[a-z0-9._~/-]|![a-z])+")
_ESCAPED_VERSION: Final = re.compile(r"v(?:[a-z0-9.+-]|![a-z])+")
_MODULE_PATH: Final = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")
_CASE_ESCAPE: Final = re.compile(r"!([a-z])")
_VERSION_FILES: Final = ("info", "mod", "zip")
_BAD_PATH: Final = Respond(400, KIND, (("Content-Type", "text/plain; charset=utf-8"),),
                           b"malformed module path or version\n")


def unescape(escaped: str) -> str:
    """Go's case decoding: ``!x`` becomes ``X`` (the text is already validated)."""
    return _CASE_ESCAPE.sub(lambda found: found.group(1).upper(), escaped)


def split_request(raw_path: str) -> tuple[str, str, str | None] | None:
    """``(escaped module, file, escaped version or None)`` of a GOPROXY path, else None."""
    if raw_path.endswith("/@latest"):
        return raw_path[1:-len("/@latest")], "latest", None
    module, marker, rest = raw_path[1:].rpartition("/@v/")
    if not marker:
        return None
    if rest == "list":
        return module, "list", None
    version, dot, suffix = rest.rpartition(".")
    if not dot or suffix not in _VERSION_FILES:
        return None
    return module, suffix, version


class GoRule(ListOrderRule):
    """go-v1: ``module_path`` and every module below it, counted under ``package_id``."""

    __slots__ = ("always_proxy", "backend", "domain", "module_path", "netloc", "package_id")

    rule_type = "go-v1"

    def __init__(self, domain: str, package_id: str, module_path: str, backend: str,
                 always_proxy: bool) -> None:
        self.domain = domain
        self.package_id = package_id
        self.module_path = module_path
        self.backend = backend
        self.netloc = urlsplit(backend).netloc
        self.always_proxy = always_proxy

    def owns(self, module: str, module_path: str | None = None) -> bool:
        """Whether ``module`` is ``module_path`` (the rule's by default) or lies below it."""
        root = self.module_path if module_path is None else module_path
        return module == root or module.startswith(root + "/")

    def match(self, request: RequestView) -> Decision | None:
        """Redirect or proxy a GOPROXY request for an owned module; 400 when malformed."""
        if request.method not in ("GET", "HEAD"):
            return None
        path = "/" + "/".join(request.segments)
        found = split_request(path)
        if found is None:
            return None
        escaped_module, file, escaped_version = found
        if _ESCAPED_PATH.fullmatch(escaped_module) is None:
            folded = self.owns(escaped_module.lower(), self.module_path.lower())
            return _BAD_PATH if folded else None
        module = unescape(escaped_module)
        if not self.owns(module):
            return None
        if any(element in (".", "..") for element in module.split("/")):
            return _BAD_PATH  # a dot-segment would leave the module on the backend
        if escaped_version is not None and _ESCAPED_VERSION.fullmatch(escaped_version) is None:
            return _BAD_PATH
        version = None if escaped_version is None else unescape(escaped_version)
        capture: Capture = {"kind": KIND, "package": self.package_id, "module": module,
                            "version": version, "file": file}
        if self.always_proxy:
            return Proxy(self.netloc, KIND, (capture,), base_url=self.backend, path=path)
        return Redirect(self.backend + path, KIND, (capture,))


def parse_go_v1(fields: Fields) -> Rule:
    """Compile a ``go-v1`` rule: ``domain``, ``package-id``, ``module-path``, ``backend-url``,
    ``always-proxy``."""
    module_path = fields.string("module-path")
    if _MODULE_PATH.fullmatch(module_path) is None:
        raise fields.error("module-path", f"malformed Go module path {module_path!r}")
    return GoRule(fields.string("domain"), fields.string("package-id"), module_path,
                  fields.base_url("backend-url"), fields.boolean("always-proxy", False))
