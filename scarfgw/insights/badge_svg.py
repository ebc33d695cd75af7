"""README badges as SVG, laid out as shields.io lays out its five styles.

Pure: a :class:`BadgeSpec` in, SVG text out. Text widths come from real font metrics (the
precalculated DejaVu Sans advance widths and kerning pairs that ``badgepy`` ships; DejaVu
Sans descends from Bitstream Vera, drawn to Verdana's proportions: its digits are as wide as
Verdana's and a word differs by a pixel or less), so a badge sits at the same width as a
shields.io badge next to it. Every text carries ``textLength``, as shields.io's do, so a
viewer's own Verdana or DejaVu fills exactly the measured box.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final, Literal
from xml.sax.saxutils import escape, quoteattr

from badgepy.precalculated_text_measurer import PrecalculatedTextMeasurer

Style = Literal["flat", "flat-square", "plastic", "for-the-badge", "social"]
STYLES: Final[tuple[Style, ...]] = ("flat", "flat-square", "plastic", "for-the-badge", "social")

_FONT_FAMILY: Final = "Verdana,Geneva,DejaVu Sans,sans-serif"
_SOCIAL_FONT_FAMILY: Final = "Helvetica Neue,Helvetica,Arial,sans-serif"
_MEASURED_AT_PX: Final = 110.0
# shields.io sets for-the-badge messages in Verdana Bold and social badges in Helvetica Bold;
# their widths relative to DejaVu Sans Book, averaged over capitals, digits and badge words
# (measured with shields.io's own width tables, the npm package anafanafo):
_BOLD_WIDTH: Final = 1.14
_SOCIAL_WIDTH: Final = 0.95
_LOGO: Final = 14
_PAD: Final = 5


@dataclass(frozen=True)
class BadgeSpec:
    """What a badge shows: ``label`` on ``label_color``, ``message`` on ``color`` (both CSS
    colour values), and an optional logo as a data URI."""

    label: str
    message: str
    color: str
    label_color: str
    style: Style = "flat"
    logo: str | None = None


@cache
def _measurer() -> PrecalculatedTextMeasurer:
    return PrecalculatedTextMeasurer.default()


def text_width(text: str, size_px: float = 11.0, scale: float = 1.0) -> float:
    """The advance width of ``text`` in pixels at ``size_px`` (kerning applied), times
    ``scale`` for another face (``_BOLD_WIDTH``, ``_SOCIAL_WIDTH``)."""
    return _measurer().text_width(text) * size_px / _MEASURED_AT_PX * scale


def _odd_width(text: str, size_px: float = 11.0, scale: float = 1.0) -> int:
    """Whole pixels, rounded up to odd, so the centred text lands on the pixel grid."""
    width = int(text_width(text, size_px, scale))
    return width + 1 if width % 2 == 0 else width


def _hex_rgb(color: str) -> tuple[int, int, int] | None:
    value = color.lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    if len(value) != 6:
        return None
    try:
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    except ValueError:
        return None


def _text_colors(background: str) -> tuple[str, str]:
    """Text and shadow colour readable on ``background`` (dark text on light colours)."""
    rgb = _hex_rgb(background)
    if rgb is not None and (rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114) / 255000 > 0.69:
        return "#333", "#ccc"
    return "#fff", "#010101"


def accessible_text(spec: BadgeSpec) -> str:
    """What a screen reader says for the badge: ``label: message``."""
    return f"{spec.label}: {spec.message}" if spec.label else spec.message


def _svg(width: int, height: int, spec: BadgeSpec, body: str) -> str:
    title = accessible_text(spec)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
            f' width="{width}" height="{height}" role="img" aria-label={quoteattr(title)}>'
            f"<title>{escape(title)}</title>{body}</svg>")


def _text(center: float, y: int, width: int, content: str, fill: str, extra: str = "") -> str:
    return (f'<text{extra} x="{center * 10:g}" y="{y}" fill="{fill}" transform="scale(.1)"'
            f' textLength="{width * 10}">{escape(content)}</text>')


def _logo(x: float, height: int, logo: str | None) -> str:
    if logo is None:
        return ""
    return (f'<image x="{x:g}" y="{(height - _LOGO) / 2:g}" width="{_LOGO}" height="{_LOGO}"'
            f" xlink:href={quoteattr(logo)}/>")


def _classic(spec: BadgeSpec) -> str:
    """flat, flat-square and plastic: one row, label left, message right."""
    height, radius, y_offset = (18, 4, -10) if spec.style == "plastic" else (20, 3, 0)
    shadow = spec.style != "flat-square"
    logo_width = _LOGO + 3 if spec.logo else 0
    has_label = bool(spec.label)
    label_width = _odd_width(spec.label) if has_label else 0
    left = label_width + 2 * _PAD + logo_width if has_label else 0
    message_width = _odd_width(spec.message)
    right = message_width + 2 * _PAD
    message_margin = left - 1
    if not has_label:
        message_margin += logo_width + _PAD if spec.logo else 2
        right += logo_width + _PAD - 1 if spec.logo else 0
    width = left + right
    label_bg = spec.label_color if has_label or spec.logo else spec.color

    def text(margin: float, content: str, text_width: int, background: str) -> str:
        if not content:
            return ""
        fill, shadow_fill = _text_colors(background)
        center = margin + 0.5 * text_width + _PAD
        under = _text(center, 150 + y_offset, text_width, content, shadow_fill,
                      ' aria-hidden="true" fill-opacity=".3"') if shadow else ""
        return under + _text(center, 140 + y_offset, text_width, content, fill)

    if spec.style == "flat-square":
        defs, group = "", '<g shape-rendering="crispEdges">'
        gloss = ""
    else:
        stops = ('<stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
                 '<stop offset="1" stop-opacity=".1"/>' if spec.style == "flat" else
                 '<stop offset="0" stop-color="#fff" stop-opacity=".7"/>'
                 '<stop offset=".1" stop-color="#aaa" stop-opacity=".1"/>'
                 '<stop offset=".9" stop-color="#000" stop-opacity=".3"/>'
                 '<stop offset="1" stop-color="#000" stop-opacity=".5"/>')
        defs = (f'<linearGradient id="s" x2="0" y2="100%">{stops}</linearGradient>'
                f'<clipPath id="r"><rect width="{width}" height="{height}" rx="{radius}"'
                ' fill="#fff"/></clipPath>')
        group = '<g clip-path="url(#r)">'
        gloss = f'<rect width="{width}" height="{height}" fill="url(#s)"/>'
    body = (f'{defs}{group}<rect width="{left}" height="{height}" fill="{label_bg}"/>'
            f'<rect x="{left}" width="{right}" height="{height}" fill="{spec.color}"/>{gloss}</g>'
            f'<g fill="#fff" text-anchor="middle" font-family="{_FONT_FAMILY}"'
            ' text-rendering="geometricPrecision" font-size="110">'
            f"{_logo(_PAD, height, spec.logo)}"
            f"{text(logo_width + 1, spec.label, label_width, label_bg)}"
            f"{text(message_margin, spec.message, message_width, spec.color)}</g>")
    return _svg(width, height, spec, body)


def _for_the_badge(spec: BadgeSpec) -> str:
    """for-the-badge: 28 px high, capitals spaced out, a bold message."""
    height, margin, logo_margin, gutter, spacing = 28, 12, 9, 6, 1.25
    label, message = spec.label.upper(), spec.message.upper()
    label_width = int(text_width(label, 10)) + spacing * len(label) if label else 0
    message_width = int(text_width(message, 10, _BOLD_WIDTH)) + spacing * len(message)
    label_x = logo_margin + _LOGO + gutter if spec.logo else margin
    if label or spec.logo:
        left = label_x + label_width + margin if label else 2 * logo_margin + _LOGO
        message_x = left + margin
    else:
        left, message_x = 0, margin
    right = 2 * margin + message_width
    width = int(left + right)
    texts = ""
    if label:
        fill = _text_colors(spec.label_color)[0]
        texts += _text(label_x + label_width / 2, 175, int(label_width * 10) // 10, label, fill)
    fill = _text_colors(spec.color)[0]
    texts += _text(message_x + message_width / 2, 175, int(message_width * 10) // 10, message,
                   fill, ' font-weight="bold"')
    background = (f'<rect width="{left:g}" height="{height}" fill="{spec.label_color}"/>'
                  if left else "")
    body = (f'<g shape-rendering="crispEdges">{background}<rect x="{left:g}" width="{right:g}"'
            f' height="{height}" fill="{spec.color}"/></g>'
            f'<g fill="#fff" text-anchor="middle" font-family="{_FONT_FAMILY}"'
            ' text-rendering="geometricPrecision" font-size="100">'
            f"{_logo(logo_margin, height, spec.logo)}{texts}</g>")
    return _svg(width, height, spec, body)


def _social(spec: BadgeSpec) -> str:
    """social: a light button with the label, and the count in a speech bubble."""
    label = spec.label[:1].upper() + spec.label[1:]
    logo_width = _LOGO + 3 if spec.logo else 0
    label_text = _odd_width(label, scale=_SOCIAL_WIDTH)
    message_text = _odd_width(spec.message, scale=_SOCIAL_WIDTH)
    label_rect = label_text + logo_width + 2 * _PAD
    message_rect = message_text + 2 * 4
    bubble_x = label_rect + 6
    width = label_rect + 1 + (6 + message_rect if spec.message else 0)
    bubble = (f'<rect x="{bubble_x + 0.5}" y="0.5" width="{message_rect}" height="19" rx="2"'
              ' fill="#fafafa"/>'
              f'<rect x="{bubble_x}" y="7.5" width="0.5" height="5" stroke="#fafafa"/>'
              f'<path d="M{bubble_x + 0.5} 6.5 l-3 3v1 l3 3" stroke="#d5d5d5" fill="#fafafa"/>'
              if spec.message else "")
    message = (_text(bubble_x + message_rect / 2, 140, message_text, spec.message, "#333")
               if spec.message else "")
    body = ('<linearGradient id="a" x2="0" y2="100%"><stop offset="0" stop-color="#fcfcfc"'
            ' stop-opacity="0"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
            f'<g stroke="#d5d5d5"><rect stroke="none" fill="#fcfcfc" x="0.5" y="0.5"'
            f' width="{label_rect}" height="19" rx="2"/>{bubble}</g>'
            f"{_logo(_PAD, 20, spec.logo)}"
            f'<g fill="#333" text-anchor="middle" font-family="{_SOCIAL_FONT_FAMILY}"'
            ' text-rendering="geometricPrecision" font-weight="700" font-size="110px">'
            f'<rect stroke="#d5d5d5" fill="url(#a)" x=".5" y=".5" width="{label_rect}"'
            ' height="19" rx="2"/>'
            + _text(logo_width + label_text / 2 + _PAD, 150, label_text, label, "#fff",
                    ' aria-hidden="true"')
            + _text(logo_width + label_text / 2 + _PAD, 140, label_text, label, "#333")
            + f"{message}</g>")
    return _svg(width, 20, spec, body)


def render(spec: BadgeSpec) -> str:
    """The badge as a standalone SVG document."""
    if spec.style == "for-the-badge":
        return _for_the_badge(spec)
    if spec.style == "social":
        return _social(spec)
    return _classic(spec)
