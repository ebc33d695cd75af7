"""Turn manifest rule objects (kebab-case keys) into compiled rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from scarfgw.rules.base import Rule
from scarfgw.rules.docker import parse_docker_v1, parse_docker_v2
from scarfgw.rules.events import parse_pixel, parse_scarf_js, parse_telemetry
from scarfgw.rules.fields import Fields, RuleError
from scarfgw.rules.files import parse_catch_all, parse_file_v1, parse_file_v2
from scarfgw.rules.gomodules import parse_go_v1
from scarfgw.rules.npm import parse_npm_v1
from scarfgw.rules.python import parse_python_v1

PARSERS: Final[dict[str, Callable[[Fields], Rule]]] = {
    "docker-v1": parse_docker_v1,
    "docker-v2": parse_docker_v2,
    "file-v1": parse_file_v1,
    "file-v2": parse_file_v2,
    "python-v1": parse_python_v1,
    "npm-v1": parse_npm_v1,
    "go-v1": parse_go_v1,
    "catch-all-v1": parse_catch_all,
    "telemetry-v1": parse_telemetry,
    "pixel-v1": parse_pixel,
    "scarf-js-v1": parse_scarf_js,
}


def parse_rules(
    items: Sequence[Any], path: str, warn: Callable[[str], None] | None = None
) -> list[Rule]:
    """Compile every rule of ``items`` (all or nothing); ``path`` is the list's key path.

    Unknown keys inside a rule are reported through ``warn`` (manifests written for the
    Haskell gateway must keep loading); anything invalid raises :class:`RuleError`.
    """
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise RuleError(path, "expected a list of rules")
    compiled: list[Rule] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise RuleError(item_path, "expected a rule object")
        rule_type = item.get("type")
        if not isinstance(rule_type, str):
            raise RuleError(f"{item_path}.type", "required string key is missing")
        parser = PARSERS.get(rule_type)
        if parser is None:
            known = ", ".join(sorted(PARSERS))
            raise RuleError(
                f"{item_path}.type", f"unknown rule type {rule_type!r} (known: {known})"
            )
        fields = Fields(item, item_path)
        compiled.append(parser(fields))
        if warn is not None:
            for key in fields.unused():
                warn(f"{fields.at(key)}: unknown key ignored")
    return compiled
