"""The insights web site: a root resource with the API mounted at ``/api/v1``.

The badges and the dashboard (``/badge``, ``/package``, ``/``) are added to the same root
with :meth:`~twisted.web.resource.Resource.putChild`; paths nobody claims answer 404 JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from scarfgw.insights.api import ApiResource
from scarfgw.insights.model import Reader
from scarfgw.insights.tokens import Tokens


class _NotFound(Resource):
    """404 as JSON for every path without a resource."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """The refusal."""
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return orjson.dumps({"error": "not found"})


class InsightsRoot(Resource):
    """The site's root: its children, else 404."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        """Unknown children (and the bare root, until a dashboard is mounted) are 404."""
        return _NotFound()


def insights_root(reader: Reader, tokens: Tokens, clock: Callable[[], float]) -> Resource:
    """The root resource with ``/api/v1`` answered by the API."""
    root = InsightsRoot()
    api = InsightsRoot()
    api.putChild(b"v1", ApiResource(reader, tokens, clock))
    root.putChild(b"api", api)
    return root


class InsightsSite(Site):
    """The site of the insights listener (no access log: the API is not a download)."""

    def log(self, request: Any) -> None:
        """Requests to insights are not logged one by one."""
