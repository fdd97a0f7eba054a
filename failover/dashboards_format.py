"""Values and colours as a Grafana panel shows them: units (``percentunit``,
``dtdurations``, ``bytes``, ``suffix: days``, ...), decimals, value mappings and
threshold steps, and Grafana's named colours as CSS. Pure; used by the preview.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Grafana's named colours (its default theme) as CSS; "text" is the panel's own colour.
NAMED_COLORS = {
    "green": "#73BF69",
    "dark-green": "#37872D",
    "semi-dark-green": "#56A64B",
    "light-green": "#96D98D",
    "red": "#F2495C",
    "dark-red": "#C4162A",
    "semi-dark-red": "#E02F44",
    "light-red": "#FF7383",
    "orange": "#FF9830",
    "dark-orange": "#FA6400",
    "semi-dark-orange": "#FF780A",
    "light-orange": "#FFB357",
    "yellow": "#FADE2A",
    "dark-yellow": "#E0B400",
    "blue": "#5794F2",
    "dark-blue": "#1F60C4",
    "purple": "#B877D9",
    "dark-purple": "#8F3BB8",
    "text": "",
    "transparent": "transparent",
}
# Grafana's classic palette, in its order: series colours when nothing else is set.
PALETTE = (
    "#7EB26D",
    "#EAB839",
    "#6ED0E0",
    "#EF843C",
    "#E24D42",
    "#1F78C1",
    "#BA43A9",
    "#705DA0",
    "#508642",
    "#CCA300",
    "#447EBC",
    "#C15C17",
)
_DURATION_UNITS = (
    ("year", 365 * 86400.0),
    ("month", 30 * 86400.0),
    ("week", 7 * 86400.0),
    ("day", 86400.0),
    ("hour", 3600.0),
    ("minute", 60.0),
    ("second", 1.0),
)
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def css_color(name: str | None) -> str:
    """A Grafana colour name as CSS ("" for the panel's text colour)."""
    if not name:
        return ""
    return NAMED_COLORS.get(name, name)


def palette_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def threshold_color(value: float, thresholds: Mapping[str, Any] | None) -> str:
    """The colour of the last step whose value ``value`` reaches (the base step has none);
    percentage thresholds are read as absolute ones."""
    steps: Sequence[Any] = (thresholds or {}).get("steps") or ()
    color = ""
    for step in steps:
        limit = step.get("value")
        if limit is None or (not math.isnan(value) and value >= float(limit)):
            color = css_color(step.get("color"))
    return color


def mapped(value: float | str, mappings: Sequence[Any] | None) -> tuple[str, str] | None:
    """(text, colour) of the first value mapping that matches ``value``: "value"
    mappings by text or number, "range" by from/to, "special" for null and NaN."""
    for mapping in mappings or ():
        options = mapping.get("options") or {}
        kind = mapping.get("type")
        result: Any = None
        if kind == "value":
            result = options.get(_key(value))
        elif kind == "range" and isinstance(value, float) and not math.isnan(value):
            low, high = options.get("from"), options.get("to")
            if (low is None or value >= low) and (high is None or value <= high):
                result = options.get("result")
        elif kind == "special" and isinstance(value, float) and math.isnan(value):
            result = options.get("result") if "nan" in str(options.get("match")) else None
        if isinstance(result, dict):
            text = result.get("text")
            return (str(text) if text is not None else _plain(value)), css_color(
                result.get("color")
            )
    return None


def format_value(value: float, unit: str | None = None, decimals: int | None = None) -> str:
    """``value`` in ``unit`` as Grafana writes it: ``percentunit`` 0.25 -> "25%",
    ``dtdurations`` 108000 -> "1 day, 6 hours", ``bytes`` 3e8 -> "286 MiB",
    ``suffix: days`` -2 (1 decimal) -> "-2.0 days"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    unit = (unit or "").strip()
    if unit == "percentunit":
        return _fixed(value * 100, decimals) + "%"
    if unit == "percent":
        return _fixed(value, decimals) + "%"
    if unit == "dtdurations":
        return duration_words(value, decimals)
    if unit in ("bytes", "decbytes", "Bps", "binBps"):
        per_second = "/s" if unit.endswith("ps") else ""
        return _bytes(value, decimals) + per_second
    if unit == "s":
        return (
            _fixed(value * 1000, decimals) + " ms"
            if abs(value) < 1
            else _fixed(value, decimals) + " s"
        )
    if unit == "ms":
        return _fixed(value, decimals) + " ms"
    if unit.startswith("suffix:"):
        return _fixed(value, decimals) + " " + unit[len("suffix:") :].strip()
    if unit.startswith("prefix:"):
        return unit[len("prefix:") :].strip() + _fixed(value, decimals)
    if unit in ("", "none", "short"):
        return _fixed(value, decimals)
    return f"{_fixed(value, decimals)} {unit}"


def duration_words(seconds: float, units: int | None = None) -> str:
    """Grafana's ``dtdurations``: the largest ``units`` units (2 unless given), each whole,
    "1 day, 6 hours"; negative durations end in "ago"."""
    if seconds < 0:
        return duration_words(-seconds, units) + " ago"
    if seconds < 1:
        return f"{round(seconds * 1000)} milliseconds" if seconds else "0 seconds"
    left = max(1, units or 2)
    remaining_s, parts = seconds, list[str]()
    for name, size_s in _DURATION_UNITS:
        count = math.floor(remaining_s / size_s)
        if count or parts:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
            remaining_s -= count * size_s
            left -= 1
            if not left:
                break
    return ", ".join(parts)


def field_display(
    value: float | str, config: Mapping[str, Any], *, color_by_value: bool = True
) -> tuple[str, str]:
    """(text, colour) of a value under a field config: its mapping if one matches, else
    the value in its unit, coloured by the thresholds (numbers only)."""
    found = mapped(value, config.get("mappings"))
    if found is not None:
        return found
    if isinstance(value, str):
        return value, ""
    text = format_value(value, config.get("unit"), _decimals(config.get("decimals")))
    color = threshold_color(value, config.get("thresholds")) if color_by_value else ""
    return text, color


def _decimals(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _fixed(value: float, decimals: int | None) -> str:
    if decimals is None:
        magnitude = abs(value)
        if value == int(value) and magnitude < 1e15:
            return str(int(value))
        decimals = 1 if magnitude >= 100 else 2 if magnitude >= 1 else 3
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 and decimals == 0 else text


def _bytes(value: float, decimals: int | None) -> str:
    size, index = abs(value), 0
    while size >= 1024 and index < len(_BYTE_UNITS) - 1:
        size /= 1024
        index += 1
    sign = "-" if value < 0 else ""
    shown = _fixed(size, decimals if decimals is not None else (0 if index == 0 else 1))
    return f"{sign}{shown} {_BYTE_UNITS[index]}"


def _key(value: float | str) -> str:
    return value if isinstance(value, str) else _plain(value)


def _plain(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)
