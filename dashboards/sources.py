"""Where a BFM dashboard's data comes from (grafanalib): the datasource variables
(Prometheus, Loki, Tempo), label and text-box variables, queries for each datasource, and
the annotations that mark the controller's decisions on every time axis.

``panels`` re-exports all of it, so a dashboard imports its helpers from one place.
"""

from __future__ import annotations

from typing import Any

import attr
from grafanalib import core

DS_PROMETHEUS = "DS_PROMETHEUS"
DS_LOKI = "DS_LOKI"
DS_TRACES = "DS_TRACES"
PROMETHEUS: dict[str, str] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
LOKI: dict[str, str] = {"type": "loki", "uid": "${DS_LOKI}"}
TRACES: dict[str, str] = {"type": "tempo", "uid": "${DS_TRACES}"}

ALL = ".*"  # what "All" of a label variable expands to in a `site=~"$site"` matcher
# Loki (and BFM's log store) refuse a stream selector whose every matcher matches the
# empty string, so "All" of a Loki variable is "any value".
LOKI_ALL = ".+"

# -- template variables --------------------------------------------------------------------


def datasource_variable(name: str, plugin: str, label: str) -> core.Template:
    """A variable of type datasource (``${name}``) choosing any ``plugin`` datasource, so
    one JSON file works on every Grafana whatever its datasources are called."""
    return core.Template(name=name, query=plugin, type="datasource", label=label, refresh=1)


def prometheus_datasource() -> core.Template:
    return datasource_variable(DS_PROMETHEUS, "prometheus", "Prometheus")


def loki_datasource() -> core.Template:
    return datasource_variable(DS_LOKI, "loki", "Loki")


def trace_datasource() -> core.Template:
    """``${DS_TRACES}``: the trace store (Tempo in production; BFM's log store answers
    Tempo's trace-by-id request too)."""
    return datasource_variable(DS_TRACES, "tempo", "Traces")


def site_variable(selector: str = "bfm_site_up") -> core.Template:
    """``$site``: the sites ``selector`` has series for, several at once, "All" = ``.*``.
    Queries filter with ``site=~"$site"``."""
    return label_variable("site", "Site", f"label_values({selector}, site)")


def component_variable(metric: str = "bfm_component_up") -> core.Template:
    """``$component``: the components ``metric`` has series for at the chosen sites.
    Queries filter with ``component=~"$component"``."""
    return label_variable(
        "component", "Component", f'label_values({metric}{{site=~"$site"}}, component)'
    )


def label_variable(
    name: str, label: str, query: str, *, datasource: dict[str, str] = PROMETHEUS
) -> core.Template:
    """A label's values from ``query`` (``label_values(...)``), several at once or "All":
    ``.*`` for Prometheus, ``.+`` for Loki (``LOKI_ALL``)."""
    return core.Template(
        name=name,
        label=label,
        query=query,
        dataSource=datasource,
        includeAll=True,
        multi=True,
        allValue=LOKI_ALL if datasource is LOKI else ALL,
        default="$__all",
        refresh=core.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def loki_variable(name: str, label: str, selector: str = "") -> core.Template:
    """``$name``: the values of the log label ``name`` (of the streams ``selector``
    picks), from ``${DS_LOKI}``."""
    of = f"{selector}, " if selector else ""
    return label_variable(name, label, f"label_values({of}{name})", datasource=LOKI)


def textbox_variable(name: str, label: str) -> core.Template:
    """A free-text box (``$name``), empty until someone types or pastes into it."""
    return core.Template(name=name, label=label, query="", type="textbox", default="")


# -- queries ---------------------------------------------------------------------------------


@attr.s
class Query(core.Target):
    """grafanalib's Target plus the keys a datasource needs beyond its fields (Prometheus's
    ``exemplar``, Loki's ``queryType``, Tempo's ``query``), left out when there are none."""

    extra: dict[str, Any] = attr.ib(factory=dict)

    def to_json_data(self) -> dict[str, Any]:
        return {**super().to_json_data(), **self.extra}


def prom(
    expr: str,
    legend: str = "",
    *,
    instant: bool = False,
    table: bool = False,
    exemplar: bool = False,
) -> Query:
    """A Prometheus query on ``${DS_PROMETHEUS}``; panels give it its refId. ``exemplar``
    asks for the exemplars (trace ids) of the histogram buckets it reads."""
    return Query(
        expr=expr,
        legendFormat=legend,
        instant=instant or table,
        format="table" if table else "time_series",
        intervalFactor=1,  # one point per Grafana interval; grafanalib's 2 halves resolution
        datasource=PROMETHEUS,
        extra={"exemplar": True} if exemplar else {},
    )


def loki(expr: str, legend: str = "", *, max_lines: int = 1000) -> Query:
    """A LogQL query on ``${DS_LOKI}`` over the time range: log lines (newest first, at
    most ``max_lines``) or, for a metric query, series."""
    return Query(
        expr=expr,
        legendFormat=legend,
        intervalFactor=1,
        datasource=LOKI,
        extra={"queryType": "range", "editorMode": "code", "maxLines": max_lines},
    )


def trace_by_id(variable: str) -> Query:
    """The trace whose id is in ``$variable``, from ``${DS_TRACES}``."""
    return Query(
        expr=f"${variable}",
        datasource=TRACES,
        extra={"queryType": "traceql", "limit": 20},
    )


def increase_with_new(selector: str, window: str) -> str:
    """The increase of the counters ``selector`` over ``window``, counting a series born
    inside the window whole. prometheus-client creates a labelled series at its first
    increment, often with a whole burst (a failover's decisions, its first refusals), and
    ``increase()`` alone extrapolates such a series back over one sample only and loses
    most of it; alerts/rules/*.yaml counts the same way."""
    return (
        f"(max_over_time({selector}[{window}]) unless {selector} offset {window})"
        f" or increase({selector}[{window}])"
    )


# -- annotations -----------------------------------------------------------------------------

ANNOTATION_STEP = "15s"  # Grafana asks for an annotation's query at most this often


def decision_annotations() -> list[dict[str, Any]]:
    """Failovers (red) and planned moves (drains, transfers; blue) the leading controller
    committed, each marking the minute after it, and the time each site was down
    (orange), on every time axis of the dashboard. Not filtered by ``$site``: a failover
    is news on every view."""
    return [
        _annotation("Failovers", _decisions('"failover"'), "red", "failover of {{component}}"),
        _annotation(
            "Planned moves",
            _decisions('"drain|transfer|cancel_drain"'),
            "blue",
            "{{kind}} of {{component}}",
        ),
        _annotation(
            "Sites down",
            # down at any scrape since the last step: a step apart, a short outage would
            # fall between two samples and never be marked
            f'max by (site) (min_over_time(bfm_site_up{{component="controller"}}'
            f"[{ANNOTATION_STEP}])) == 0",
            "orange",
            "site {{site}} down",
        ),
    ]


def _decisions(kinds: str) -> str:
    # bfm_failovers_total carries the leader's site: summed away, so that a leader change
    # changes nothing here.
    counter = f"bfm_failovers_total{{kind=~{kinds}}}"
    return f"sum by (component, kind) ({increase_with_new(counter, '1m')}) > 0"


def _annotation(name: str, expr: str, colour: str, title: str) -> dict[str, Any]:
    """A Prometheus annotation: a mark (or a region, for consecutive steps) wherever
    ``expr`` has a value."""
    return {
        "datasource": PROMETHEUS,
        "enable": True,
        "hide": False,
        "iconColor": colour,
        "name": name,
        "expr": expr,
        "step": ANNOTATION_STEP,
        "titleFormat": title,
        "tagKeys": "site,component,kind",
        "textFormat": "",
        "useValueForTime": False,
    }
