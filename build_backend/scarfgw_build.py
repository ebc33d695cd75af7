"""The PEP 517 build backend: setuptools', plus what mypyc needs in an isolated build.

mypyc type-checks the compiled modules against the libraries they import, so a wheel build
(``pip install .``, ``python -m build``) needs mypy and the runtime dependencies (their type
information) in its isolated environment. They are read from setup.cfg, so the two lists
never drift apart. ``SCARFGW_PURE=1`` builds need neither.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from setuptools import build_meta
from setuptools.build_meta import (
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

TYPE_CHECKING_REQUIREMENTS = ["mypy>=1.11", "mypy-zope>=1.0", "types-PyYAML"]


def _compile_requirements() -> list[str]:
    """mypy and the runtime dependencies, unless the build is pure Python."""
    if os.environ.get("SCARFGW_PURE"):
        return []
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(Path(__file__).parents[1] / "setup.cfg")
    lines = setup_cfg["options"]["install_requires"].splitlines()
    return TYPE_CHECKING_REQUIREMENTS + [line.strip() for line in lines if line.strip()]


def get_requires_for_build_wheel(config_settings: dict[str, str] | None = None) -> list[str]:
    """setuptools' wheel requirements plus :func:`_compile_requirements`."""
    return build_meta.get_requires_for_build_wheel(config_settings) + _compile_requirements()


def get_requires_for_build_editable(config_settings: dict[str, str] | None = None
                                    ) -> list[str]:
    """As for a wheel: an editable install compiles too unless ``SCARFGW_PURE`` is set."""
    return build_meta.get_requires_for_build_editable(config_settings) + _compile_requirements()
