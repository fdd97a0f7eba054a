"""Shared building blocks of BFM's Grafana dashboards (grafanalib): panels that cannot be
built without a description, a row-by-row layout, links between BFM dashboards, stable
uids, and (from ``sources``, re-exported here) the datasources, variables, queries and
annotations.

Every ``*.dashboard.py`` in this folder builds on these, so the dashboards look, filter
and link alike (docs/dashboards.md). ``bfm dashboards build`` puts this folder on
``sys.path`` while it runs a dashboard, hence the plain ``import panels``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import attr
from board import (
    GRID_WIDTH,
    SCHEMA_VERSION,
    TAG,
    UID_MAX_CHARS,
    UID_PREFIX,
    Row,
    bfm_dashboard,
    dashboard_uid,
    layout,
    links_by_tag,
    required,
    row,
)
from grafanalib import core
from sources import (
    ALL,
    DS_LOKI,
    DS_PROMETHEUS,
    DS_TRACES,
    LOKI,
    LOKI_ALL,
    PROMETHEUS,
    TRACES,
    Query,
    component_variable,
    datasource_variable,
    decision_annotations,
    increase_with_new,
    label_variable,
    loki,
    loki_datasource,
    loki_variable,
    prom,
    prometheus_datasource,
    site_variable,
    textbox_variable,
    trace_by_id,
    trace_datasource,
)

# Everything a dashboard may import: this module's panels and, re-exported, the
# dashboard (board) and data (sources) helpers, so that it imports from one place.
__all__ = [
    "ALL",
    "BLUE",
    "DS_LOKI",
    "DS_PROMETHEUS",
    "DS_TRACES",
    "GREEN",
    "GREY",
    "GRID_WIDTH",
    "LOKI",
    "LOKI_ALL",
    "ORANGE",
    "PROMETHEUS",
    "RED",
    "SCHEMA_VERSION",
    "TAG",
    "TRACES",
    "UID_MAX_CHARS",
    "UID_PREFIX",
    "BarGauge",
    "Gauge",
    "Mappings",
    "Query",
    "Row",
    "Steps",
    "Traces",
    "bar_gauge",
    "bfm_dashboard",
    "component_variable",
    "dashboard_uid",
    "datasource_variable",
    "decision_annotations",
    "increase_with_new",
    "label_variable",
    "layout",
    "leader_stat",
    "link_to",
    "links_by_tag",
    "logs",
    "loki",
    "loki_datasource",
    "loki_variable",
    "prom",
    "prometheus_datasource",
    "row",
    "section",
    "site_variable",
    "stat",
    "state_timeline",
    "steps",
    "table",
    "textbox_variable",
    "timeseries",
    "trace_by_id",
    "trace_datasource",
    "traces",
    "value_mappings",
]

GREEN, ORANGE, RED, BLUE, GREY = "green", "orange", "red", "blue", "text"

Steps = list[dict[str, Any]]
Mappings = list[dict[str, Any]]


def link_to(panel: core.Panel, name: str, title: str) -> core.Panel:
    """``panel`` with a link to the BFM dashboard ``name`` (its uid), keeping the time
    range and ``$site``: where to look next when this panel is red."""
    url = f"/d/{dashboard_uid(name)}?${{__url_time_range}}&${{site:queryparam}}"
    return attr.evolve(panel, links=[*panel.links, {"title": title, "url": url}])


# -- thresholds, value mappings -----------------------------------------------------------


def steps(base: str, *above: tuple[float, str]) -> Steps:
    """Threshold steps: ``base`` below the first value, then each ``(value, colour)`` from
    that value up. ``steps(RED, (7, ORANGE), (30, GREEN))``: red < 7 <= orange < 30 <= green."""
    values = [value for value, _ in above]
    if values != sorted(set(values)):
        raise ValueError(f"threshold values must increase: {values}")
    return [{"color": base, "value": None}] + [
        {"color": colour, "value": value} for value, colour in above
    ]


def value_mappings(*entries: tuple[float | str, str, str]) -> Mappings:
    """Value -> (text, colour) mappings: ``value_mappings((1, "valid", GREEN), ...)``."""
    options = {
        _mapping_key(value): {"text": text, "color": colour, "index": index}
        for index, (value, text, colour) in enumerate(entries)
    }
    return [{"type": "value", "options": options}]


def _mapping_key(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- panels ----------------------------------------------------------------------------------


def stat(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    unit: str = "none",
    thresholds: Steps | None = None,
    mappings: Mappings | None = None,
    decimals: int | None = None,
    text_mode: str = "auto",
    no_value: str = "no data",
) -> core.Stat:
    """A stat of the last value of each series, coloured by ``mappings``/``thresholds``."""
    return core.Stat(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        format=unit,
        decimals=decimals,
        mappings=mappings or [],
        thresholds=thresholds or steps(GREY),
        color={"mode": "thresholds"},
        colorMode="background",
        graphMode="none",
        reduceCalc="lastNotNull",
        textMode=text_mode,
        noValue=no_value,
    )


def timeseries(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    unit: str = "short",
    thresholds: Steps | None = None,
    value_min: int | None = None,
    value_max: int | None = None,
    stacked: bool = False,
    bars: bool = False,
) -> core.TimeSeries:
    """A line per series, legend as a table with last and max, tooltip over all series;
    ``thresholds`` are drawn as lines (where the alert fires), ``stacked`` areas add up
    to a total, ``bars`` for counts per interval."""
    return core.TimeSeries(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        unit=unit,
        stacking={"mode": "normal", "group": "A"} if stacked else {},
        fillOpacity=25 if stacked or bars else 0,
        drawStyle="bars" if bars else "line",
        thresholds=thresholds or steps(GREEN),
        thresholdsStyleMode="line" if thresholds else "off",
        valueMin=value_min,
        valueMax=value_max,
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
    )


def state_timeline(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    mappings: Mappings,
) -> core.StateTimeline:
    """One band per series whose colour and text come from ``mappings``: for states."""
    return core.StateTimeline(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        mappings=mappings,
        thresholds=steps(GREY),
        colorMode="thresholds",
        showValue="auto",
        mergeValues=True,
        legendDisplayMode="hidden",
    )


@dataclass(frozen=True)
class Gauge:
    """A table column of numbers drawn as a gauge bar, coloured by ``thresholds``."""

    unit: str
    thresholds: Steps
    value_max: float | None = None


def table(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    hide_columns: Iterable[str] = ("Time", "Value"),
    column_mappings: dict[str, Mappings] | None = None,
    sort_by: str = "site",
    descending: bool = False,
    rename: dict[str, str] | None = None,
    gauges: dict[str, Gauge] | None = None,
) -> core.Table:
    """An instant table (queries with ``table=True``): one row per series, the label
    columns shown, ``hide_columns`` hidden, and each column of ``column_mappings`` shown
    as coloured cells with its mappings' texts; rows sorted by ``sort_by``. Several
    queries are merged into one row per label set, their values (``Value #A``, ...)
    named by ``rename`` and drawn as ``gauges``."""
    overrides = [
        _override(
            column,
            {"id": "mappings", "value": mappings},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "custom.displayMode", "value": "color-background"},
        )
        for column, mappings in (column_mappings or {}).items()
    ] + [
        _override(
            column,
            {"id": "unit", "value": gauge.unit},
            {"id": "min", "value": 0},
            {"id": "max", "value": gauge.value_max},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": gauge.thresholds}},
            {"id": "color", "value": {"mode": "thresholds"}},
            {"id": "custom.cellOptions", "value": {"type": "gauge", "mode": "basic"}},
        )
        for column, gauge in (gauges or {}).items()
    ]
    organize: dict[str, Any] = {"excludeByName": dict.fromkeys(hide_columns, True)}
    if rename:
        organize["renameByName"] = rename
    merge = [{"id": "merge", "options": {}}] if len(targets) > 1 else []
    return core.Table(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        thresholds=steps(GREY),
        overrides=overrides,
        transformations=[*merge, {"id": "organize", "options": organize}],
        sortBy=[core.TableSortByField(displayName=sort_by, desc=descending)],
    )


def _override(column: str, *properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [p for p in properties if p["value"] is not None],
    }


def bar_gauge(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    unit: str,
    thresholds: Steps,
    value_max: float | None = None,
) -> BarGauge:
    """A horizontal bar per series, its last value coloured by ``thresholds``: the
    fullest resource stands out (Grafana 10's bar gauge model, not grafanalib's old one)."""
    return BarGauge(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        thresholds=thresholds,
        unit=unit,
        value_max=value_max,
    )


def logs(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    oldest_first: bool = False,
) -> core.Logs:
    """Log lines with their time, labels and details (structured metadata such as the
    trace id), wrapped; newest first unless ``oldest_first`` (a trace reads top down)."""
    return core.Logs(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
        showTime=True,
        showLabels=True,
        wrapLogMessages=True,
        enableLogDetails=True,
        sortOrder="Ascending" if oldest_first else "Descending",
    )


def traces(title: str, *, description: str, targets: Sequence[core.Target]) -> Traces:
    """Grafana's trace view (spans as a waterfall) of the traces ``targets`` return."""
    return Traces(
        title=title,
        description=required(title, description),
        dataSource=_datasource_of(title, targets),
        targets=_with_ref_ids(targets),
    )


@attr.s
class BarGauge(core.Panel):
    """Grafana 10's bar gauge (grafanalib's emits the pre-7 ``fieldOptions`` that Grafana
    would migrate over these settings)."""

    unit: str = attr.ib(default="none")
    value_max: float | None = attr.ib(default=None)

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json(
            {
                "type": "bargauge",
                "fieldConfig": {
                    "defaults": {
                        "unit": self.unit,
                        "min": 0,
                        "max": self.value_max,
                        "color": {"mode": "thresholds"},
                    },
                    "overrides": [],
                },
                "options": {
                    "displayMode": "gradient",
                    "orientation": "horizontal",
                    "showUnfilled": True,
                    "valueMode": "color",
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                },
            }
        )


@attr.s
class Traces(core.Panel):
    """Grafana's ``traces`` panel (not in grafanalib)."""

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json({"type": "traces", "options": {}})


def leader_stat(*, description: str) -> core.Stat:
    """ "Leader": the site whose controller replica holds the leader lease (the leader
    series carries the replica's own site), or NO LEADER; ignores ``$site``."""
    leading = 'max by (site) (bfm_controller_is_leader{component="controller"}) == 1'
    return stat(
        "Leader",
        description=description,
        targets=[prom(leading, "{{site}}")],
        thresholds=steps(BLUE),
        text_mode="name",
        no_value="NO LEADER",
    )


def section(title: str, *, description: str) -> core.RowPanel:
    """A row header: a title across the grid that groups the panels below it."""
    return core.RowPanel(title=title, description=required(title, description))


def _datasource_of(title: str, targets: Sequence[core.Target]) -> Any:
    """The one datasource of a panel's queries (a panel of mixed datasources would need
    Grafana's "-- Mixed --" pseudo-datasource, which no variable can switch)."""
    found = {json.dumps(t.datasource, sort_keys=True) for t in targets}
    if len(found) > 1:
        raise ValueError(f"panel {title!r} mixes datasources {sorted(found)}: split it")
    return targets[0].datasource if targets else PROMETHEUS


def _with_ref_ids(targets: Sequence[core.Target]) -> list[core.Target]:
    if not targets:
        raise ValueError("a panel needs at least one query")
    if len(targets) > len(string.ascii_uppercase):
        raise ValueError(f"at most 26 queries per panel, got {len(targets)}")
    return [
        attr.evolve(target, refId=ref_id)
        for target, ref_id in zip(targets, string.ascii_uppercase, strict=False)
    ]
