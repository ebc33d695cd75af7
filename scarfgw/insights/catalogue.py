"""The packages insights knows: one per package id of the configured rules.

Each has its kind, a human label and the domains that serve it:

- docker-v1: one package per ``package-id``, labelled with the image name;
- docker-v2: one package per ``rule-id`` (its events carry ``auto_create_rule`` and no
  package), labelled with the image pattern: every image the pattern admits counts there;
- file-v1/v2: the incoming template or regex; python-v1: the project name;
- catch-all and telemetry: the domain; other rules with a ``package_id`` (npm, go): the id.

A package id used by several rules keeps the first rule's kind and label and gathers the
domains of all of them. Pixels have no package id and are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from scarfgw.insights.model import Package
from scarfgw.rules.base import Rule
from scarfgw.rules.docker import DockerV1Rule, DockerV2Rule
from scarfgw.rules.files import CatchAllRule, FileV1Rule, FileV2Rule
from scarfgw.rules.python import PythonIndex


def _entries(rule: Rule) -> Iterator[tuple[str, str, str]]:
    """``(id, kind, label)`` of every package ``rule`` counts."""
    if isinstance(rule, DockerV1Rule):
        for image, package_id in rule.images.items():
            yield package_id, "docker", "/".join(image)
    elif isinstance(rule, DockerV2Rule):
        yield rule.rule_id, "docker", rule.pattern.source
    elif isinstance(rule, FileV1Rule):
        yield rule.package_id, "file", rule.incoming.text
    elif isinstance(rule, FileV2Rule):
        yield rule.package_id, "file", rule.source
    elif isinstance(rule, PythonIndex):
        for declaration in rule.declarations():
            yield declaration.package_id, "python", declaration.package_name
    elif isinstance(rule, CatchAllRule):
        yield rule.package_id, "catchall", f"{rule.domain} (catch-all)"
    else:
        declared = getattr(rule, "package_id", None)
        if isinstance(declared, str):
            kind = rule.rule_type.rsplit("-", 1)[0]
            yield declared, kind, str(getattr(rule, "package_name", None) or rule.domain)


def catalogue(rules: Iterable[Rule]) -> tuple[Package, ...]:
    """The packages of ``rules`` in configuration order."""
    found: dict[str, tuple[str, str, list[str]]] = {}
    for rule in rules:
        for package_id, kind, label in _entries(rule):
            _, _, domains = found.setdefault(package_id, (kind, label, []))
            if rule.domain.lower() not in domains:
                domains.append(rule.domain.lower())
    return tuple(Package(package_id, kind, label, tuple(domains))
                 for package_id, (kind, label, domains) in found.items())
