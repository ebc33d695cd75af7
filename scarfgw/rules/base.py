"""The contract every compiled rule fulfils, and the kind order of spec 3.3."""

from __future__ import annotations

from typing import Any, Final, Protocol

from scarfgw.rules.decision import Decision
from scarfgw.rules.request import RequestView

KIND_ORDER: Final = (
    "scarf-js-v1",
    "docker-v1",
    "docker-v2",
    "pixel-v1",
    "file-v1",
    "file-v2",
    "python-v1",
    "npm-v1",
    "go-v1",
    "telemetry-v1",
    "catch-all-v1",
)
"""Rule types in evaluation order (scarf-js first: it only matches its own path)."""


class Rule(Protocol):
    """A compiled rule of one domain.

    ``rule_type`` is the manifest type (``docker-v1``...). Rules of one type are ordered
    by ``sort_key()`` (descending when ``sort_descending``); ``merge`` combines a rule with
    the adjacent rule that follows it in the list (spec 3.3 step 2) or returns ``None``.
    """

    @property
    def rule_type(self) -> str:
        """The manifest type, e.g. ``docker-v1``."""
        ...

    @property
    def domain(self) -> str:
        """The domain the rule belongs to, as configured."""
        ...

    @property
    def sort_descending(self) -> bool:
        """Whether rules of this type are ordered by descending ``sort_key``."""
        ...

    def sort_key(self) -> Any:
        """Key ordering rules of the same type (return a constant to keep list order)."""
        ...

    def merge(self, following: Rule) -> Rule | None:
        """The rule replacing ``self`` and ``following`` when they merge, else ``None``."""
        ...

    def match(self, request: RequestView) -> Decision | None:
        """A decision, or ``None`` to let the next rule try."""
        ...


class ListOrderRule:
    """Sorting and merging for rule kinds that keep their list order and never merge."""

    __slots__ = ()

    sort_descending = False

    def sort_key(self) -> int:
        """Constant: rules of this kind keep their list order."""
        return 0

    def merge(self, following: Rule) -> Rule | None:
        """These rules never merge."""
        return None
