"""The dashboard's colours meet WCAG AA contrast (4.5:1 for text, 3:1 for graphics and focus
rings), read from the stylesheet that ships."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "scarfgw" / "insights" / "templates"
       / "app.css").read_text()
COLOURS = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", CSS))


def luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def value(name: str) -> str:
    return COLOURS.get(name, name)


@pytest.mark.parametrize(("foreground", "background", "minimum"), [
    ("ink", "card", 4.5), ("ink", "soft", 4.5), ("muted", "card", 4.5), ("muted", "soft", 4.5),
    ("accent", "card", 4.5), ("accent", "soft", 4.5), ("accent-ink", "accent", 4.5),
    ("up", "card", 4.5), ("down", "card", 4.5), ("bar", "card", 3.0), ("accent", "card", 3.0),
    ("focus", "#0f1b2d", 3.0), ("#ffffff", "#0f1b2d", 4.5), ("#c5d1e0", "#0f1b2d", 4.5),
    ("#123f8c", "#e7eefc", 4.5), ("#8a1c15", "#fdecea", 4.5),
])
def test_colours_meet_wcag_aa(foreground, background, minimum):
    assert contrast(value(foreground), value(background)) >= minimum
