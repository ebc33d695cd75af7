"""A badge's query string, read as shields.io reads it: ``style``, ``label``, ``color``,
``label-color``, ``logo``, ``logo-color`` (camelCase spellings too) and ``period``.

Pure: raw query text in, :class:`BadgeOptions` out, or :class:`BadgeOptionError` with a
one-line reason for the 400. Logos are the simple-icons set as the ``simple-icons-pack``
package ships it (the icons' SVG and brand colours, kept in step with the npm package).
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal
from urllib.parse import parse_qsl

from simple_icons_pack import get_icon

from scarfgw.insights.badge_svg import STYLES, Style

Period = Literal["total", "month", "week"]
PERIODS: Final[tuple[Period, ...]] = ("total", "month", "week")

NAMED_COLORS: Final = {
    "brightgreen": "#4c1", "green": "#97ca00", "yellow": "#dfb317",
    "yellowgreen": "#a4a61d", "orange": "#fe7d37", "red": "#e05d44", "blue": "#007ec6",
    "grey": "#555", "gray": "#555", "lightgrey": "#9f9f9f", "lightgray": "#9f9f9f",
    "success": "#4c1", "important": "#fe7d37", "critical": "#e05d44",
    "informational": "#007ec6", "inactive": "#9f9f9f", "black": "#000", "white": "#fff",
    "whitesmoke": "#f5f5f5", "purple": "#800080", "pink": "#ffc0cb", "teal": "#008080",
    "navy": "#000080", "orangered": "#ff4500", "gold": "#ffd700", "silver": "#c0c0c0",
}
"""shields.io's colour names, and the common CSS names, as hex."""

_HEX: Final = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_MAX_QUERY: Final = 4096
_MAX_TEXT: Final = 64
_MAX_LOGO_URI: Final = 16384
_DATA_URI: Final = re.compile(r"^data:image/(svg\+xml|png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$")
_SLUG_WORDS: Final = {"+": "plus", ".": "dot", "&": "and", "\u0111": "d", "\u0127": "h",
                      "\u0131": "i", "\u0138": "k", "\u0140": "l", "\u0142": "l",
                      "\u00df": "ss", "\u0167": "t"}
_KEYS: Final = {"style": "style", "label": "label", "color": "color", "colorb": "color",
                "label-color": "label-color", "labelcolor": "label-color",
                "colora": "label-color", "logo": "logo", "logo-color": "logo-color",
                "logocolor": "logo-color", "period": "period"}
"""The parameters read; others (``cacheSeconds``, ``v=2`` cache busters) are ignored."""


class BadgeOptionError(ValueError):
    """A query parameter that cannot be honoured; the message names it."""


@dataclass(frozen=True)
class BadgeOptions:
    """The badge the query asks for (``label`` None: the badge's own label)."""

    style: Style = "flat"
    label: str | None = None
    color: str | None = None
    label_color: str = "#555"
    logo: str | None = None
    period: Period = "total"


def color_value(name: str, value: str) -> str:
    """``value`` (a colour name or hex, with or without ``#``) as a CSS colour."""
    lowered = value.strip().lower()
    if lowered in NAMED_COLORS:
        return NAMED_COLORS[lowered]
    match = _HEX.match(lowered)
    if match is None:
        raise BadgeOptionError(f"{name}: not a colour name or hex value: {value[:40]!r}")
    return "#" + match.group(1)


def icon_slug(name: str) -> str:
    """A simple-icons slug from a slug or a brand title (``Node.js`` -> ``nodedotjs``)."""
    lowered = "".join(_SLUG_WORDS.get(char, char) for char in name.strip().lower())
    decomposed = unicodedata.normalize("NFD", lowered)
    return "".join(char for char in decomposed if char.isascii() and char.isalnum())


@lru_cache(maxsize=256)
def logo_uri(name: str, logo_color: str | None, style: Style) -> str:
    """The data URI of logo ``name``: a data URI as given, or a simple-icons icon filled
    with ``logo_color`` (default: whitesmoke, or the brand colour on ``social``)."""
    if name.startswith("data:"):
        if len(name) > _MAX_LOGO_URI or not _DATA_URI.match(name.replace(" ", "+")):
            raise BadgeOptionError("logo: a data URI must be a base64 svg/png/jpeg/gif/webp "
                                   f"image of at most {_MAX_LOGO_URI} characters")
        return name.replace(" ", "+")
    icon = get_icon(icon_slug(name))
    if icon is None:
        raise BadgeOptionError(f"logo: no simple-icons icon named {name[:40]!r}")
    fill = logo_color or ("#" + icon.hex if style == "social" else NAMED_COLORS["whitesmoke"])
    svg = icon.svg.replace("<svg ", f'<svg fill="{fill}" ', 1)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def _text(name: str, value: str) -> str:
    if len(value) > _MAX_TEXT or any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise BadgeOptionError(f"{name}: at most {_MAX_TEXT} printable characters")
    return value


def parse_options(raw_query: str) -> BadgeOptions:
    """The options of a badge request's raw query (``None``/empty: the defaults)."""
    if len(raw_query) > _MAX_QUERY:
        raise BadgeOptionError(f"query longer than {_MAX_QUERY} characters")
    values: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, errors="strict",
                          max_num_fields=32)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadgeOptionError(f"unreadable query: {str(exc)[:80]}") from None
    for key, value in pairs:
        canonical = _KEYS.get(key.lower().replace("_", "-"))
        if canonical is not None:
            values[canonical] = value
    style = values.get("style", "flat") or "flat"
    if style not in STYLES:
        raise BadgeOptionError(f"style: one of {', '.join(STYLES)}")
    period = values.get("period", "total") or "total"
    if period not in PERIODS:
        raise BadgeOptionError(f"period: one of {', '.join(PERIODS)}")
    typed_style: Style = style
    logo_color = (color_value("logo-color", values["logo-color"])
                  if values.get("logo-color") else None)
    return BadgeOptions(
        style=typed_style,
        label=_text("label", values["label"]) if "label" in values else None,
        color=color_value("color", values["color"]) if values.get("color") else None,
        label_color=(color_value("label-color", values["label-color"])
                     if values.get("label-color") else "#555"),
        logo=logo_uri(values["logo"], logo_color, typed_style) if values.get("logo") else None,
        period=period,
    )


def compact(count: int) -> str:
    """A count as shields.io shows it: ``999``, ``1.2k``, ``12k``, ``3.4M``."""
    if count < 1000:
        return str(max(count, 0))
    value = float(count)
    for unit in ("k", "M", "G", "T", "P"):
        value /= 1000
        if round(value, 1) < 10:
            return f"{round(value, 1):g}{unit}"
        if round(value) < 1000:
            return f"{round(value)}{unit}"
    return f"{round(value)}P"
