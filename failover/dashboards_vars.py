"""Grafana's template variables without Grafana: a dashboard's variables expanded as
Grafana expands them (label variables, text boxes, ``$__interval``, ``$__rate_interval``,
``$__range``, ...) over a time window. Pure: no I/O. ``failover.dashboards_query`` runs the
expanded queries and re-exports what is public here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ALL = "$__all"  # Grafana's value for "All" in a label variable
PROMETHEUS_ALL = ".*"
LOKI_ALL = ".+"  # Loki refuses a selector whose every matcher matches ""
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z_]\w*)(?::[\w-]+)?\}"
    r"|\[\[(?P<old>[A-Za-z_]\w*)(?::[\w-]+)?\]\]"
    r"|\$(?P<plain>[A-Za-z_]\w*)"
)
_LEGEND_LABEL = re.compile(r"\{\{\s*([^}\s]+)\s*\}\}")
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|w)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class UnknownVariable(ValueError):
    """A query names a variable that is neither the dashboard's nor a Grafana built-in."""

    def __init__(self, name: str, expr: str) -> None:
        super().__init__(
            f"{expr!r} uses ${name}, which is neither a variable of the dashboard nor a "
            f"Grafana built-in: define {name!r} in the dashboard's templating (a label "
            "variable or panels.textbox_variable) or correct the name in the query"
        )
        self.name = name
        self.expr = expr


@dataclass(frozen=True)
class Window:
    """The time range of a run and the resolution Grafana would ask for."""

    start_s: float  # unix seconds
    end_s: float
    max_points: int = 300  # a panel's width in points
    scrape_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise ValueError(f"the window ends ({self.end_s}) before it starts ({self.start_s})")
        if self.max_points < 1 or not self.scrape_interval_s > 0:
            raise ValueError("max_points and scrape_interval_s must be positive")

    @property
    def step_s(self) -> float:
        """Grafana's ``$__interval``: the range over the points, at least one scrape
        interval, rounded up to whole seconds."""
        raw_s = max(self.scrape_interval_s, (self.end_s - self.start_s) / self.max_points)
        return float(max(1, math.ceil(raw_s - 1e-9)))

    @property
    def rate_interval_s(self) -> float:
        """Grafana's ``$__rate_interval``: max(4 scrapes, ``$__interval`` + 1 scrape)."""
        return max(4 * self.scrape_interval_s, self.step_s + self.scrape_interval_s)

    def builtins(self) -> dict[str, str]:
        """Grafana's built-in variables for this window, as Grafana writes them."""
        range_ms = round((self.end_s - self.start_s) * 1000)
        range_s = round(range_ms / 1000)
        return {
            "__interval": duration_text(self.step_s),
            "__interval_ms": str(round(self.step_s * 1000)),
            "__rate_interval": duration_text(self.rate_interval_s),
            "__rate_interval_ms": str(round(self.rate_interval_s * 1000)),
            "__range": f"{range_s}s",
            "__range_s": str(range_s),
            "__range_ms": str(range_ms),
            "__from": str(round(self.start_s * 1000)),
            "__to": str(round(self.end_s * 1000)),
        }


def duration_text(seconds: float) -> str:
    """``seconds`` in the largest unit that holds it whole: 15 -> "15s", 120 -> "2m",
    90 -> "90s", 2.5 -> "2500ms" (Prometheus and Loki read each form)."""
    whole_ms = round(seconds * 1000)
    for unit in ("d", "h", "m", "s"):
        unit_ms = round(_UNIT_S[unit] * 1000)
        if whole_ms and whole_ms % unit_ms == 0:
            return f"{whole_ms // unit_ms}{unit}"
    return f"{whole_ms}ms"


def variable_values(
    model: Mapping[str, Any], selections: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """Every templating variable's expansion, datasource variables left out.

    A label variable with nothing selected (or ``$__all``) expands to its allValue; one
    selected value to itself, several to ``(a|b)``, each regex-escaped for a quoted
    PromQL or LogQL string as Grafana escapes them. A text box is its selection, else its
    default. ``selections`` may name variables the dashboard lacks: they are ignored."""
    chosen = selections or {}
    values: dict[str, str] = {}
    for variable in variables(model):
        name, kind = variable.get("name"), variable.get("type")
        if not isinstance(name, str) or kind == "datasource":
            continue
        picked = _as_list(chosen.get(name, ()))
        if kind in ("textbox", "constant", "interval"):
            values[name] = picked[0] if picked else _default(variable)
        else:
            values[name] = _label_value(model, variable, picked)
    return values


def expand(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced
    by ``values[name]`` (a format is accepted and the value used as it is: multi-value
    selections are already in their regex form); ``UnknownVariable`` for a name not there."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["old"] or match["plain"]
        if name not in values:
            raise UnknownVariable(name, expr)
        return values[name]

    return _VARIABLE.sub(value, expr)


def legend_name(legend: str, labels: Mapping[str, str]) -> str:
    """A series' name as Grafana writes it: ``{{label}}`` filled in from ``labels``, or,
    with no legend, the metric name and labels in PromQL's form."""
    if legend and legend != "__auto":
        return _LEGEND_LABEL.sub(lambda match: labels.get(match[1], ""), legend)
    name = labels.get("__name__", "")
    rest = ", ".join(f'{key}="{val}"' for key, val in sorted(labels.items()) if key != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def datasource_type(
    model: Mapping[str, Any], panel: Mapping[str, Any], target: Mapping[str, Any]
) -> str:
    """The plugin type of the query's datasource; ``${DS_X}`` is looked up among the
    datasource variables; Grafana's default, Prometheus, when none is named."""
    source = target.get("datasource") or panel.get("datasource")
    if isinstance(source, dict):
        if source.get("type"):
            return str(source["type"])
        source = source.get("uid")
    if isinstance(source, str) and source:
        name = source.strip("${}")
        for variable in variables(model):
            if variable.get("type") == "datasource" and variable.get("name") == name:
                return str(variable.get("query") or "prometheus")
        lowered = source.lower()
        return "loki" if "loki" in lowered else "tempo" if "tempo" in lowered else "prometheus"
    return "prometheus"


def variables(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = (model.get("templating") or {}).get("list") or ()
    return [variable for variable in found if isinstance(variable, dict)]


def _label_value(model: Mapping[str, Any], variable: Mapping[str, Any], picked: list[str]) -> str:
    if not picked or ALL in picked:
        source = variable.get("datasource")
        kind = datasource_type(model, {}, {"datasource": source}) if source else "prometheus"
        return str(variable.get("allValue") or (LOKI_ALL if kind == "loki" else PROMETHEUS_ALL))
    if not (variable.get("multi") or variable.get("includeAll")):
        return picked[0]
    escaped = [regex_escape(value) for value in picked]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def regex_escape(value: str) -> str:
    """``value`` as a regex inside a double-quoted PromQL or LogQL string, as Grafana's
    Prometheus and Loki datasources escape a multi-value selection (``a.b`` -> ``a\\\\.b``)."""
    doubled = value.replace("\\", "\\\\\\\\")
    return _REGEX_SPECIAL.sub(lambda match: "\\\\" + match[0], doubled)


def _default(variable: Mapping[str, Any]) -> str:
    current = variable.get("current")
    value = current.get("value") if isinstance(current, dict) else None
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value if value is not None else variable.get("query") or "")


def _as_list(value: Sequence[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else [str(item) for item in value]


def interval_s(text: str) -> float:
    """A Grafana interval ("15s", "1m", "30") in seconds; 0 when empty or unreadable."""
    match = _DURATION.fullmatch(text.strip())
    return float(match["n"]) * _UNIT_S[match["unit"] or "s"] if match else 0.0
