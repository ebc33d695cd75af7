"""A :class:`MultiService` whose children stop one after the other."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer


class SequentialService(MultiService):
    """Children start in the order they were added and stop in the reverse order, each once
    the one after it has finished stopping (Twisted's :class:`MultiService` stops them all
    at once): stop accepting, then drain, then flush, then close the admin listener."""

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        """Stop the children from the last to the first, waiting for each."""
        Service.stopService(self)
        for child in reversed(list(self)):
            yield defer.maybeDeferred(child.stopService)
