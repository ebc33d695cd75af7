"""Domain -> ordered rule list (built once at load time); ``route`` finds the first match."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from scarfgw.rules.base import KIND_ORDER, Rule
from scarfgw.rules.decision import Decision, Respond
from scarfgw.rules.request import RequestView, normalize_domain

REGISTRY_NOT_FOUND: Final = (
    b'{"errors":[{"code":"NAME_UNKNOWN","detail":{},'
    b'"message":"repository name not known to registry"}]}'
)

_NOT_FOUND: Final = Respond(status=404, kind="none")
_REGISTRY_NOT_FOUND: Final = Respond(
    status=404,
    kind="none",
    headers=(("Content-Type", "application/json"),),
    body=REGISTRY_NOT_FOUND,
)


def fallback(request: RequestView) -> Respond:
    """The 404 sent when no rule matched (spec 3.4), decided on the decoded segments."""
    segments = request.segments
    if segments and segments[0] == "v2" and not (len(segments) > 1 and segments[1] == "_catalog"):
        return _REGISTRY_NOT_FOUND
    return _NOT_FOUND


def _merge_adjacent(rules: Iterable[Rule]) -> list[Rule]:
    merged: list[Rule] = []
    for rule in rules:
        combined = merged[-1].merge(rule) if merged else None
        if combined is None:
            merged.append(rule)
        else:
            merged[-1] = combined
    return merged


def _sort(rules: Sequence[Rule]) -> list[Rule]:
    by_type: dict[str, list[Rule]] = {rule_type: [] for rule_type in KIND_ORDER}
    for rule in rules:
        by_type[rule.rule_type].append(rule)
    ordered: list[Rule] = []
    for group in by_type.values():
        if group:
            ordered.extend(
                sorted(group, key=lambda r: r.sort_key(), reverse=group[0].sort_descending)
            )
    return ordered


def order_domain_rules(declared: Sequence[Rule]) -> tuple[Rule, ...]:
    """Spec 3.3: reverse manifest order, merge adjacent, stable sort by kind, merge again."""
    return tuple(_merge_adjacent(_sort(_merge_adjacent(reversed(declared)))))


class Router:
    """Routes a request to the first matching rule of its domain.

    ``rules`` are in manifest order; domains are compared as :func:`normalize_domain` spells
    them, so rule lists of domains differing only in case or a trailing dot are routed
    together (and sorted once).
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        declared: dict[str, list[Rule]] = {}
        for rule in rules:
            declared.setdefault(normalize_domain(rule.domain), []).append(rule)
        self.table: dict[str, tuple[Rule, ...]] = {
            domain: order_domain_rules(domain_rules) for domain, domain_rules in declared.items()
        }

    @property
    def domains(self) -> frozenset[str]:
        """Every configured domain (normalised)."""
        return frozenset(self.table)

    def route(self, request: RequestView) -> Decision:
        """The decision of the first rule of ``request.host`` that matches, else the fallback."""
        for rule in self.table.get(request.host, ()):
            decision = rule.match(request)
            if decision is not None:
                return decision
        return fallback(request)
