"""Event endpoints: telemetry-v1 (spec 4.6), the pixel (4.7) and scarf-js (4.8).

The pixel and scarf-js rules are built into the Haskell gateway; scarfgw configures them
per domain with the rule types ``pixel-v1`` and ``scarf-js-v1``.
"""

from __future__ import annotations

import base64
import hmac
from typing import Final

from scarfgw.rules.base import ListOrderRule, Rule
from scarfgw.rules.bodyjson import TooDeep, parse_json_objects, parse_single_json
from scarfgw.rules.decision import Decision, Respond
from scarfgw.rules.fields import Fields
from scarfgw.rules.request import RequestView, decode_segments

DEFAULT_MAX_BODY_BYTES: Final = 256
DEFAULT_MAX_EVENTS: Final = 10

_BEARER: Final = "Bearer "
_UNAUTHORIZED: Final = Respond(status=401, kind="telemetry")
_INVALID_JSON: Final = Respond(status=422, kind="scarfjs")
_METHOD_NOT_ALLOWED: Final = Respond(status=405, kind="scarfjs")
_SCARF_JS_PATH: Final = ("package-event", "install")
_JSON_HEADERS: Final = (("Content-Type", "application/json"),)
_TEXT_HEADERS: Final = (("Content-Type", "text/plain; charset=utf-8"),)


def _too_deep(kind: str, error: TooDeep) -> Respond:
    """400 naming the reason: the body nests too deeply to be read."""
    return Respond(status=400, kind=kind, headers=_TEXT_HEADERS, body=f"{error}\n".encode())


class TelemetryRule(ListOrderRule):
    """telemetry-v1: ``POST`` JSON objects to a fixed path, optionally with a bearer token.

    ``tokens`` is ``None`` when anyone may post; an empty tuple rejects everybody. Tokens
    are UTF-8 bytes, compared in constant time.
    """

    __slots__ = ("domain", "max_body_bytes", "max_events", "package_id", "segments", "tokens")

    rule_type = "telemetry-v1"

    def __init__(
        self,
        domain: str,
        segments: tuple[str, ...],
        package_id: str,
        tokens: tuple[bytes, ...] | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self.domain = domain
        self.segments = segments
        self.package_id = package_id
        self.tokens = tokens
        self.max_body_bytes = max_body_bytes
        self.max_events = max_events

    def match(self, request: RequestView) -> Decision | None:
        """401 without an accepted token, 400 for a body nested too deeply, else 200 with one
        capture per body object."""
        if request.method != "POST" or request.segments != self.segments:
            return None
        if not self._authorised(request.header("authorization")):
            return _UNAUTHORIZED
        try:
            events = parse_json_objects(request.body, self.max_body_bytes, self.max_events)
        except TooDeep as error:
            return _too_deep("telemetry", error)
        captures = tuple(
            {"kind": "telemetry", "package": self.package_id, "event": event} for event in events
        )
        return Respond(status=200, kind="telemetry", captures=captures, captures_before=True)

    def _authorised(self, authorization: str | None) -> bool:
        if self.tokens is None:
            return True
        if authorization is None or not authorization.startswith(_BEARER):
            return False
        presented = authorization[len(_BEARER) :].strip().encode("utf-8")
        accepted = False
        for token in self.tokens:
            accepted |= hmac.compare_digest(presented, token)
        return accepted


class PixelRule(ListOrderRule):
    """The tracking pixel: ``GET /a.png[/...]`` answers a fixed image and records ``x-pxid``."""

    __slots__ = ("_headers", "content_type", "domain", "image")

    rule_type = "pixel-v1"

    def __init__(self, domain: str, content_type: str, image: bytes) -> None:
        self.domain = domain
        self.content_type = content_type
        self.image = image
        self._headers = (
            ("Cache-control", "no-cache, no-store, must-revalidate"),
            ("Content-Length", str(len(image))),
            ("Content-Type", content_type),
        )

    def merge(self, following: Rule) -> Rule | None:
        """Two identical adjacent pixel rules collapse into one (spec 3.3)."""
        if (
            isinstance(following, PixelRule)
            and following.content_type == self.content_type
            and following.image == self.image
        ):
            return self
        return None

    def match(self, request: RequestView) -> Decision | None:
        """The image with no-cache headers; only ``GET`` (Oddity O19: any path below it)."""
        if request.method != "GET" or not request.segments or request.segments[0] != "a.png":
            return None
        capture = {"kind": "pixel", "package": None, "pixel_id": pixel_id(request)}
        return Respond(
            status=200, kind="pixel", headers=self._headers, body=self.image, captures=(capture,)
        )


def pixel_id(request: RequestView) -> str:
    """The value of the first ``x-pxid`` query parameter; ``""`` if missing or without ``=``."""
    for name, value in request.parsed_query:
        if name == "x-pxid":
            return value or ""
    return ""


class ScarfJsRule(ListOrderRule):
    """The npm install-event endpoint ``/package-event/install[/<package>]``.

    The body is validated before the method (Oddity O17): invalid JSON is 422 whatever
    the method, valid JSON with a method other than ``POST`` is 405.
    """

    __slots__ = ("domain",)

    rule_type = "scarf-js-v1"

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def match(self, request: RequestView) -> Decision | None:
        """400 for a body nested too deeply, 422, 405, or 200 with the JSON body as the
        event."""
        segments = request.segments
        if segments[:2] != _SCARF_JS_PATH:
            return None
        try:
            valid, event = parse_single_json(request.body)
        except TooDeep as error:
            return _too_deep("scarfjs", error)
        if not valid:
            return _INVALID_JSON
        if request.method != "POST":
            return _METHOD_NOT_ALLOWED
        package = segments[2] if len(segments) > 2 else None
        capture = {"kind": "scarfjs", "package": package, "event": event}
        return Respond(status=200, kind="scarfjs", headers=_JSON_HEADERS, captures=(capture,))


def parse_telemetry(fields: Fields) -> Rule:
    """Compile a ``telemetry-v1`` rule (spec 2.7, plus ``max-body-bytes``, ``max-events``)."""
    domain = fields.string("domain")
    path = fields.string("incoming-path").partition("?")[0]
    tokens = fields.optional_string_list("access-tokens")
    return TelemetryRule(
        domain=domain,
        segments=decode_segments(path),
        package_id=fields.string("package-id"),
        tokens=None if tokens is None else tuple(token.encode("utf-8") for token in tokens),
        max_body_bytes=fields.positive_int("max-body-bytes", DEFAULT_MAX_BODY_BYTES),
        max_events=fields.positive_int("max-events", DEFAULT_MAX_EVENTS),
    )


def parse_pixel(fields: Fields) -> Rule:
    """Compile a ``pixel-v1`` rule: ``domain``, ``content-type``, ``image-base64``."""
    domain = fields.string("domain")
    content_type = fields.string("content-type")
    encoded = fields.string("image-base64")
    try:
        image = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise fields.error("image-base64", f"invalid base64: {exc}") from exc
    return PixelRule(domain, content_type, image)


def parse_scarf_js(fields: Fields) -> Rule:
    """Compile a ``scarf-js-v1`` rule: ``domain`` only."""
    return ScarfJsRule(fields.string("domain"))
