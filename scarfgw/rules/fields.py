"""Typed access to the fields of one manifest rule, with key paths in every error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

_MISSING: Final = object()


class RuleError(ValueError):
    """A config node is invalid; ``path`` names the key, e.g. ``rules[3].pattern``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class Fields:
    """Reads keys of one rule object; remembers which keys were read.

    ``path`` is the object's own key path (``rules[3]``, ``""`` for the top level);
    ``preread`` names keys already consumed by the caller (a rule's ``type``). Keys are
    typed ``Any``: YAML reads some (``on``, ``1``) as booleans or numbers, and compiled code
    checks what it is told.
    """

    def __init__(
        self, data: Mapping[Any, Any], path: str, preread: tuple[str, ...] = ("type",)
    ) -> None:
        self.data = data
        self.path = path
        self.used: set[str] = set(preread)

    def at(self, key: str) -> str:
        """The key path of ``key`` inside this object."""
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> RuleError:
        """A RuleError pointing at ``key``."""
        return RuleError(self.at(key), reason)

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error(key, "required key is missing")
            return None
        return value

    def string(self, key: str) -> str:
        """A required, non-null string."""
        value = self._get(key, required=True)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        return value

    def optional_string(self, key: str, default: str | None = None) -> str | None:
        """A string that may be missing or null."""
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string or null, got {_describe(value)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean that may be missing or null."""
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_describe(value)}")
        return value

    def optional_bool(self, key: str) -> bool | None:
        """A boolean, or None when missing/null."""
        value = self._get(key, required=False)
        if value is None or isinstance(value, bool):
            return value
        raise self.error(key, f"expected true, false or null, got {_describe(value)}")

    def positive_int(self, key: str, default: int) -> int:
        """A positive integer that may be missing or null."""
        value = self._get(key, required=False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(key, f"expected a positive integer, got {_describe(value)}")
        return value

    def number(self, key: str, default: float) -> float:
        """A positive number (int or float) that may be missing or null."""
        value = self._get(key, required=False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise self.error(key, f"expected a positive number, got {_describe(value)}")
        return float(value)

    def base_url(self, key: str) -> str:
        """A required ``http``/``https`` URL with a host and no query or fragment, returned
        without its trailing ``/`` (paths are appended to it)."""
        value = self.string(key)
        try:
            parts = urlsplit(value)
            valid = bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid or parts.scheme not in ("http", "https") or parts.query or parts.fragment:
            raise self.error(
                key, f"expected an http(s) URL with a host and no query, got {value!r}")
        return value.rstrip("/")

    def optional_string_list(self, key: str) -> list[str] | None:
        """A list of strings, or None when missing/null."""
        value = self._get(key, required=False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {_describe(value)}")
        return list(value)

    def optional_list(self, key: str) -> list[Any] | None:
        """A list, or None when missing/null."""
        value = self._get(key, required=False)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_describe(value)}")
        return value

    def optional_mapping(self, key: str) -> Mapping[str, Any] | None:
        """An object, or None when missing/null."""
        value = self._get(key, required=False)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected an object, got {_describe(value)}")
        return value

    def unused(self) -> list[str]:
        """Keys present in the rule that no reader asked for (warned about, not fatal); YAML
        reads keys such as ``on:`` or ``1:`` as booleans or numbers, named here as text."""
        return sorted(str(k) for k in self.data if k not in self.used)

    def reject_unknown(self) -> None:
        """Raise for the first key no reader asked for (strict sections of scarfgw's own)."""
        for key in self.unused():
            raise self.error(key, "unknown key")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
