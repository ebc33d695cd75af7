"""The house rule "nothing imports upwards": every module under ``scarfgw/`` imports only its
own package, the packages of lower layers, the standard library and third-party code; the
core (``scarfgw/rules/``) imports only itself and the standard library (never Twisted).

Every import counts: at module level, inside functions (imported late to save memory or
start-up time, it is still a dependency) and under ``if TYPE_CHECKING:`` (a type from a
higher layer is a dependency too, one that hides an import cycle).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "scarfgw"

LAYERS: list[set[str]] = [
    {"__init__"},  # scarfgw/__init__.py: the version
    {"rules"},  # the pure core
    {"ops"},  # metrics, the admin listener, logs
    {"analytics", "http"},  # the event record and writer; the HTTP channel, endpoint strings
    {"tls"},  # SNI, ACME, certificates (its transport wraps the HTTP channel)
    {"gateway", "insights"},  # requests -> decisions -> responses; the read side
    {"config"},  # the config file read into the typed sections of the layers below
    {"runtime"},  # wiring per process role (reloads the config), the snapshot, listeners
    {"tap", "cli"},  # the faces: twistd options, the scarfgw command
]
"""From the bottom up (README, "Development"). A module may import its own unit (a package
under scarfgw/, or a top-level module) and the units of lower layers; the units of one layer
are independent of each other."""

RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(path: Path) -> str:
    """The layer unit of a source file: its package under scarfgw/, or its module name."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imported_units(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, imported module, its unit) for every import of a scarfgw module in ``path``."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = ".".join(("scarfgw", *path.relative_to(PACKAGE).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from scarfgw import cli`` imports the module cli: name the member too
            names = [f"{base}.{alias.name}" if base == "scarfgw" else base
                     for alias in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            parts = name.split(".")
            if parts[0] != "scarfgw":
                yield node.lineno, name, ""
            elif len(parts) == 1 or parts[1] not in RANK:
                yield node.lineno, name, "__init__"
            else:
                yield node.lineno, name, parts[1]


def sources() -> list[Path]:
    """Every module under scarfgw/."""
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted({unit_of(path) for path in sources()} - RANK.keys())
    assert not unplaced, f"place these in LAYERS (tests/unit/test_layers.py): {unplaced}"


def test_nothing_imports_upwards() -> None:
    offences = []
    for path in sources():
        unit = unit_of(path)
        for line, name, target in imported_units(path):
            if not target or target == unit:
                continue
            if RANK[target] > RANK[unit]:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}: "
                                f"{target} is above {unit}")
            elif RANK[target] == RANK[unit]:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}: "
                                f"{target} and {unit} are one layer, independent of each other")
    assert not offences, "imports against the layer order:\n" + "\n".join(offences)


def test_the_core_imports_only_itself_and_the_standard_library() -> None:
    offences = []
    for path in sorted((PACKAGE / "rules").rglob("*.py")):
        for line, name, target in imported_units(path):
            top = name.split(".")[0]
            if target != "rules" and top not in sys.stdlib_module_names:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not offences, "scarfgw/rules/ is pure (no Twisted, no I/O):\n" + "\n".join(offences)
