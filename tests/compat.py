"""The shared compat-case harness: locating, loading and comparing ``shared/compat`` cases.

Used by the pure-core runner (tests/unit/test_compat_core.py) and the real-socket runner
(tests/integration/test_compat.py). The cases are reference data read at test time.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

COMPAT_DIR = Path(
    os.environ.get("SCARFGW_COMPAT_DIR", Path(__file__).parents[2] / "shared" / "compat")
)
CASE_NAMES = sorted(p.stem for p in COMPAT_DIR.glob("*.yaml")) if COMPAT_DIR.is_dir() else []
EXPECTED_CASE_COUNT = 75


@functools.cache
def load_case(name: str) -> dict[str, Any]:
    """A compat case by name, with ``config_from`` resolved (parsed once per session)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    case: dict[str, Any] = yaml.load((COMPAT_DIR / f"{name}.yaml").read_text("utf-8"), loader)
    if "config_from" in case:
        case = {**case, "config": load_case(case["config_from"])["config"]}
    return case


def builtin_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A ``builtin_rules`` entry as a scarfgw rule (pixel-v1 / scarf-js-v1)."""
    if rule["type"] == "pixel":
        return {
            "type": "pixel-v1",
            "domain": rule["domain"],
            "content-type": rule["content_type"],
            "image-base64": base64.b64encode(rule["body"].encode()).decode(),
        }
    return {"type": "scarf-js-v1", "domain": rule["domain"]}


def case_rules(case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The manifest rules of a case plus its built-in rules."""
    return list(case["config"]["rules"]) + [builtin_rule(r) for r in case.get("builtin_rules", [])]


def request_target(request: Mapping[str, Any]) -> str:
    """Path, then ``?query`` when a query is given (``""`` gives a bare ``?``)."""
    query = request.get("query")
    return request["path"] if query is None else f"{request['path']}?{query}"


def assert_events_match(actual: Sequence[Mapping[str, Any]],
                        expected: Sequence[Mapping[str, Any]]) -> None:
    """Compare the keys each expected event lists (scarfgw adds common and extra keys);
    a missing ``body_variables`` equals ``{}``."""
    assert len(actual) == len(expected), actual
    for got, want in zip(actual, expected, strict=True):
        projected = {key: got.get(key, {} if key == "body_variables" else None) for key in want}
        assert projected == dict(want)
