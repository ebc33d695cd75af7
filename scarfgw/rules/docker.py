"""docker-v1 (exact image names) and docker-v2 (image patterns) rules: spec 2.1, 2.2, 4.1.

Both share one matcher: ``/v2/_catalog`` is a local 404, ``/v2/`` and recognised
``/v2/<image>/{manifests,blobs,tags}/<reference>`` requests are redirected to the registry
(redirect-capable clients, query dropped: Oddity O9) or proxied to it (always-proxy, Basic
credentials, every other client). Any HTTP method is accepted.

A rule with ``token-realm: rewrite`` also answers its registry's ``/v2/token/<id>``: it is
always proxied, marked ``token_endpoint``, to the backend's real token realm (the proxy hides
that realm's host), and records no event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.decision import Capture, Decision, Proxy, Redirect, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.imagepattern import ImagePattern
from scarfgw.rules.request import RequestView, has_dot_segment

TOKEN_REALMS: Final = ("pass-through", "rewrite")
"""Values of the per-rule ``token-realm`` key (scarfgw extension); the first is the default."""
TOKEN_PATH: Final = "/v2/token"
"""Prefix of the gateway's own token endpoints for ``token-realm: rewrite`` rules."""


def token_path(registry: str) -> str:
    """The gateway's token endpoint for ``registry``: ``/v2/token/<id>``, one per registry so
    that a domain may rewrite the realms of several, and an opaque id so that the path does
    not name the backend."""
    return f"{TOKEN_PATH}/{hashlib.sha256(registry.encode()).hexdigest()[:16]}"

_DOT_SEGMENTS: Final = Respond(
    status=400,
    kind="docker",
    headers=(("Content-Type", "application/json"),),
    body=b'{"errors":[{"code":"NAME_INVALID","detail":{},'
         b'"message":"the path has . or .. segments"}]}',
)
"""Refusal of a ``/v2/`` path with dot-segments: forwarded, the registry would resolve it to
another image than the one recorded."""

_REGISTRY_ALIASES: Final = {"registry.hub.docker.com": "registry-1.docker.io"}
_OBJECTS: Final = {"manifests": "manifest", "blobs": "blob", "tags": "tag"}
_REDIRECT_UA_SUBSTRINGS: Final = (
    "Docker-Client",
    "containerd/1.4.9",
    "containerd/1.5.5",
    "containerd/1.6",
)


def sanitise_registry(registry: str) -> str:
    """Replace ``registry.hub.docker.com`` (exactly) by ``registry-1.docker.io``."""
    return _REGISTRY_ALIASES.get(registry, registry)


def is_redirect_capable(user_agent: str | None) -> bool:
    """Whether a client with this User-Agent follows a registry redirect (case-sensitive)."""
    if user_agent is None:
        return False
    return (
        user_agent.startswith("docker/")
        or user_agent == "Watchtower (Docker)"
        or any(marker in user_agent for marker in _REDIRECT_UA_SUBSTRINGS)
    )


def parse_image_request(segments: Sequence[str]) -> tuple[tuple[str, ...], str, str] | None:
    """``(image, object, reference)`` of ``/v2/<image>/<manifests|blobs|tags>/<ref>/...``.

    The first ``manifests``/``blobs``/``tags`` segment after ``v2`` splits image and
    reference; it must be followed by a segment. ``object`` is ``manifest``, ``blob`` or
    ``tag``. ``None`` when the segments do not have that shape.
    """
    if not segments or segments[0] != "v2":
        return None
    for index in range(1, len(segments) - 1):
        kind = _OBJECTS.get(segments[index])
        if kind is not None:
            return tuple(segments[1:index]), kind, segments[index + 1]
    return None


@dataclass(frozen=True, slots=True)
class _Match:
    """What recognised an image: a package id (docker-v1) or an auto-creation rule id."""

    package: str | None
    auto_create_rule: str | None


_NO_MATCH: Final = _Match(None, None)


@dataclass(frozen=True, slots=True)
class RegistryBackend:
    """Where a docker rule sends clients, and how (``always_proxy``, ``token_realm``)."""

    registry: str
    always_proxy: bool
    token_realm: str

    @property
    def token_path(self) -> str | None:
        """This backend's token endpoint on the gateway, when its realm is rewritten."""
        return token_path(self.registry) if self.token_realm == "rewrite" else None


class _DockerRule(ListOrderRule):
    """The matcher shared by both docker kinds; subclasses recognise image names.

    Docker rules keep their list order (spec 3.3); only docker-v1 rules merge.

    Rules are slotted and not mutated after construction (docker-v1 only memoises matches).
    """

    __slots__ = ("backend", "domain")

    def __init__(self, domain: str, backend: RegistryBackend) -> None:
        self.domain = domain
        self.backend = backend

    def _recognise(self, image: tuple[str, ...]) -> _Match | None:
        raise NotImplementedError

    def match(self, request: RequestView) -> Decision | None:
        """Catalog 404, API root, token endpoint, 400 for a ``/v2/`` path with dot-segments,
        or a recognised image request; else ``None``."""
        raw_path = request.raw_path
        if raw_path == "/v2/_catalog":
            return Respond(status=404, kind="docker", captures=(self._empty_capture(request),))
        if raw_path.startswith(TOKEN_PATH) and raw_path == self.backend.token_path:
            return Proxy(
                backend=self.backend.registry,
                kind="docker",
                rewrite_token_realm=True,
                token_endpoint=True,
            )
        if raw_path == "/v2/":
            return self._redirect_or_proxy(request, self._empty_capture(request))
        if has_dot_segment(raw_path) and request.segments[:1] == ("v2",):
            return _DOT_SEGMENTS
        parsed = parse_image_request(request.segments)
        if parsed is None:
            return None
        image, kind, reference = parsed
        found = self._recognise(image)
        if found is None:
            return None
        capture = self._capture(request, found, "/".join(image), reference, kind)
        return self._redirect_or_proxy(request, capture)

    def _empty_capture(self, request: RequestView) -> Capture:
        return self._capture(request, _NO_MATCH, "", "", None)

    def _capture(
        self, request: RequestView, found: _Match, image: str, reference: str, kind: str | None
    ) -> Capture:
        return {
            "kind": "docker",
            "package": found.package,
            "image": image,
            "reference": reference,
            "backend": self.backend.registry,
            "auto_create_rule": found.auto_create_rule,
            "object": kind,
            "pull": kind == "manifest" and request.method == "GET",
        }

    def _redirect_or_proxy(self, request: RequestView, capture: Capture) -> Decision:
        backend = self.backend
        captures = (capture,)
        if not backend.always_proxy:
            authorization = request.header("authorization")
            basic = authorization is not None and authorization.startswith("Basic")
            if not basic and is_redirect_capable(request.header("user-agent")):
                location = "https://" + backend.registry + request.raw_path
                return Redirect(location, "docker", captures)
        return Proxy(
            backend=backend.registry,
            kind="docker",
            captures=captures,
            rewrite_token_realm=backend.token_realm == "rewrite",
        )


class DockerV1Rule(_DockerRule):
    """docker-v1: exact image names (segment tuples) mapped to their package ids.

    ``_found`` remembers the match of each image once requested (a merge copies ``images``,
    so building every match up front would make loading a long run of rules quadratic).
    """

    __slots__ = ("_found", "images")

    rule_type = "docker-v1"

    def __init__(
        self, domain: str, backend: RegistryBackend, images: Mapping[tuple[str, ...], str]
    ) -> None:
        super().__init__(domain, backend)
        self.images = images
        self._found: dict[tuple[str, ...], _Match] = {}

    def _recognise(self, image: tuple[str, ...]) -> _Match | None:
        found = self._found.get(image)
        if found is None:
            package = self.images.get(image)
            if package is None:
                return None
            found = self._found[image] = _Match(package, None)
        return found

    def merge(self, following: Rule) -> Rule | None:
        """Spec 3.3 / Oddity O5: a following docker-v1 rule with the same registry joins.

        The image tables are united (the following rule wins a collision); ``always-proxy``
        and ``token-realm`` are this rule's. Identical rules therefore collapse into one.
        """
        if (
            not isinstance(following, DockerV1Rule)
            or following.backend.registry != self.backend.registry
        ):
            return None
        return DockerV1Rule(self.domain, self.backend, {**self.images, **following.images})


class DockerV2Rule(_DockerRule):
    """docker-v2: images matching a pattern are recorded against an auto-creation rule."""

    __slots__ = ("_found", "pattern", "rule_id")

    rule_type = "docker-v2"

    def __init__(
        self, domain: str, backend: RegistryBackend, pattern: ImagePattern, rule_id: str
    ) -> None:
        super().__init__(domain, backend)
        self.pattern = pattern
        self.rule_id = rule_id
        self._found = _Match(None, rule_id)

    def _recognise(self, image: tuple[str, ...]) -> _Match | None:
        return self._found if self.pattern.matches(image) else None


def _parse_backend(fields: Fields) -> RegistryBackend:
    token_realm = fields.optional_string("token-realm", TOKEN_REALMS[0])
    if token_realm not in TOKEN_REALMS:
        allowed = " or ".join(repr(value) for value in TOKEN_REALMS)
        raise fields.error("token-realm", f"expected {allowed}, got {token_realm!r}")
    fields.optional_string("owner")
    return RegistryBackend(
        registry=sanitise_registry(fields.string("registry")),
        always_proxy=fields.boolean("always-proxy", False),
        token_realm=token_realm,
    )


def parse_docker_v1(fields: Fields) -> Rule:
    """Compile a ``docker-v1`` manifest rule (spec 2.1, plus ``token-realm``)."""
    domain = fields.string("domain")
    backend = _parse_backend(fields)
    fields.optional_string("package-name")
    image = tuple(fields.string("repository-name").split("/"))
    return DockerV1Rule(domain, backend, {image: fields.string("package-id")})


def parse_docker_v2(fields: Fields) -> Rule:
    """Compile a ``docker-v2`` manifest rule (spec 2.2, plus ``token-realm``)."""
    domain = fields.string("domain")
    backend = _parse_backend(fields)
    source = fields.string("pattern")
    try:
        pattern = ImagePattern(source)
    except ValueError as exc:
        raise fields.error("pattern", f"invalid image pattern {source!r}: {exc}") from exc
    return DockerV2Rule(domain, backend, pattern, fields.string("rule-id"))
