"""Shared building blocks of BFM's Grafana dashboards (grafanalib): datasource and label
variables, panels that cannot be built without a description, a row-by-row layout,
links between BFM dashboards, and stable uids.

Every ``*.dashboard.py`` in this folder builds on these, so the dashboards look, filter
and link alike (docs/dashboards.md). ``bfm dashboards build`` puts this folder on
``sys.path`` while it runs a dashboard, hence the plain ``import panels``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import attr
from grafanalib import core

GRID_WIDTH = 24  # Grafana's grid is 24 columns wide; heights are in 30-pixel units
# Grafana 10/11's schema. grafanalib's default (12) would have Grafana run its old-row
# migrations on every load, and they rewrite the gridPos this module computes.
SCHEMA_VERSION = 39
TAG = "bfm"  # every BFM dashboard carries it; the dashboards' links list them by it
UID_PREFIX = "bfm-"
UID_MAX_CHARS = 40  # Grafana refuses longer uids

DS_PROMETHEUS = "DS_PROMETHEUS"
DS_LOKI = "DS_LOKI"
PROMETHEUS: dict[str, str] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
LOKI: dict[str, str] = {"type": "loki", "uid": "${DS_LOKI}"}

ALL = ".*"  # what "All" of a label variable expands to in a `site=~"$site"` matcher

GREEN, ORANGE, RED, BLUE, GREY = "green", "orange", "red", "blue", "text"

_UID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

Steps = list[dict[str, Any]]
Mappings = list[dict[str, Any]]


# -- identity and links ------------------------------------------------------------------


def dashboard_uid(name: str) -> str:
    """``bfm-<name>``: fixed by the dashboard's name, never generated, so links, bookmarks
    and runbook URLs survive every rebuild and every Grafana instance."""
    uid = f"{UID_PREFIX}{name}"
    if not _UID.fullmatch(uid) or len(uid) > UID_MAX_CHARS:
        raise ValueError(
            f"dashboard name {name!r} gives the uid {uid!r}: use lowercase letters, digits "
            f"and single dashes, at most {UID_MAX_CHARS - len(UID_PREFIX)} characters"
        )
    return uid


def links_by_tag(tag: str = TAG, *, title: str = "BFM dashboards") -> list[core.DashboardLink]:
    """One drop-down listing every dashboard tagged ``tag``; it keeps the time range and the
    variables (site, datasources), so moving between dashboards keeps the view."""
    return [
        core.DashboardLink(
            asDropdown=True,
            includeVars=True,
            keepTime=True,
            tags=[tag],
            title=title,
            type="dashboards",
        )
    ]


# -- template variables --------------------------------------------------------------------


def datasource_variable(name: str, plugin: str, label: str) -> core.Template:
    """A variable of type datasource (``${name}``) choosing any ``plugin`` datasource, so
    one JSON file works on every Grafana whatever its datasources are called."""
    return core.Template(name=name, query=plugin, type="datasource", label=label, refresh=1)


def prometheus_datasource() -> core.Template:
    return datasource_variable(DS_PROMETHEUS, "prometheus", "Prometheus")


def loki_datasource() -> core.Template:
    return datasource_variable(DS_LOKI, "loki", "Loki")


def site_variable(selector: str = "bfm_site_up") -> core.Template:
    """``$site``: the sites ``selector`` has series for, several at once, "All" = ``.*``.
    Queries filter with ``site=~"$site"``."""
    return _label_variable("site", "Site", f"label_values({selector}, site)")


def component_variable(metric: str = "bfm_component_up") -> core.Template:
    """``$component``: the components ``metric`` has series for at the chosen sites.
    Queries filter with ``component=~"$component"``."""
    return _label_variable(
        "component", "Component", f'label_values({metric}{{site=~"$site"}}, component)'
    )


def _label_variable(name: str, label: str, query: str) -> core.Template:
    return core.Template(
        name=name,
        label=label,
        query=query,
        dataSource=PROMETHEUS,
        includeAll=True,
        multi=True,
        allValue=ALL,
        default="$__all",
        refresh=core.REFRESH_ON_TIME_RANGE_CHANGE,
    )


# -- queries, thresholds, value mappings ---------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> core.Target:
    """A Prometheus query on ``${DS_PROMETHEUS}``; panels give it its refId."""
    return core.Target(
        expr=expr,
        legendFormat=legend,
        instant=instant or table,
        format="table" if table else "time_series",
        intervalFactor=1,  # one point per Grafana interval; grafanalib's 2 halves resolution
        datasource=PROMETHEUS,
    )


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
        description=_required(title, description),
        dataSource=PROMETHEUS,
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
) -> core.TimeSeries:
    """A line per series, legend as a table with last and max, tooltip over all series."""
    return core.TimeSeries(
        title=title,
        description=_required(title, description),
        dataSource=PROMETHEUS,
        targets=_with_ref_ids(targets),
        unit=unit,
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
        description=_required(title, description),
        dataSource=PROMETHEUS,
        targets=_with_ref_ids(targets),
        mappings=mappings,
        thresholds=steps(GREY),
        colorMode="thresholds",
        showValue="auto",
        mergeValues=True,
        legendDisplayMode="hidden",
    )


def table(
    title: str,
    *,
    description: str,
    targets: Sequence[core.Target],
    hide_columns: Iterable[str] = ("Time", "Value"),
    column_mappings: dict[str, Mappings] | None = None,
    sort_by: str = "site",
) -> core.Table:
    """An instant table (queries with ``table=True``): one row per series, the label
    columns shown, ``hide_columns`` hidden, and each column of ``column_mappings`` shown
    as coloured cells with its mappings' texts; rows sorted by ``sort_by``."""
    overrides = [
        {
            "matcher": {"id": "byName", "options": column},
            "properties": [
                {"id": "mappings", "value": mappings},
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                {"id": "custom.displayMode", "value": "color-background"},
            ],
        }
        for column, mappings in (column_mappings or {}).items()
    ]
    organize = {"excludeByName": dict.fromkeys(hide_columns, True)}
    return core.Table(
        title=title,
        description=_required(title, description),
        dataSource=PROMETHEUS,
        targets=_with_ref_ids(targets),
        thresholds=steps(GREY),
        overrides=overrides,
        transformations=[{"id": "organize", "options": organize}],
        sortBy=[core.TableSortByField(displayName=sort_by)],
    )


def section(title: str, *, description: str) -> core.RowPanel:
    """A row header: a title across the grid that groups the panels below it."""
    return core.RowPanel(title=title, description=_required(title, description))


def _required(title: str, description: str) -> str:
    if not description.strip():
        raise ValueError(
            f"panel {title!r} has no description: say what it shows, where the numbers "
            "come from and what to do when it is red"
        )
    return description.strip()


def _with_ref_ids(targets: Sequence[core.Target]) -> list[core.Target]:
    if not targets:
        raise ValueError("a panel needs at least one query")
    if len(targets) > len(string.ascii_uppercase):
        raise ValueError(f"at most 26 queries per panel, got {len(targets)}")
    return [
        attr.evolve(target, refId=ref_id)
        for target, ref_id in zip(targets, string.ascii_uppercase, strict=False)
    ]


# -- layout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """Panels side by side, left to right, all ``height`` high; widths add up to <= 24."""

    height: int
    cells: tuple[tuple[core.Panel, int], ...]


def row(height: int, *cells: tuple[core.Panel, int]) -> Row:
    """``row(5, (state_panel, 8), (grace_panel, 8))``."""
    width = sum(w for _, w in cells)
    if height < 1 or width > GRID_WIDTH or any(w < 1 for _, w in cells):
        titles = [panel.title for panel, _ in cells]
        raise ValueError(
            f"row {titles} is {width} wide and {height} high: widths must be >= 1 and add "
            f"up to at most {GRID_WIDTH}, the height >= 1"
        )
    return Row(height, cells)


def layout(*items: Row | core.RowPanel) -> list[core.Panel]:
    """The panels placed top to bottom (a section header takes a full-width line), each
    with its gridPos and an id numbered from 1 in reading order: the same source always
    gives the same ids, so panel links (``viewPanel=<id>``) stay valid."""
    placed: list[core.Panel] = []
    y = 0
    for item in items:
        if isinstance(item, core.RowPanel):
            grid = core.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)
            placed.append(attr.evolve(item, gridPos=grid, id=len(placed) + 1))
            y += 1
            continue
        x = 0
        for panel, width in item.cells:
            grid = core.GridPos(h=item.height, w=width, x=x, y=y)
            placed.append(attr.evolve(panel, gridPos=grid, id=len(placed) + 1))
            x += width
        y += item.height
    return placed


# -- the dashboard ----------------------------------------------------------------------------


def bfm_dashboard(
    *,
    name: str,
    title: str,
    description: str,
    panels: list[core.Panel],
    variables: Sequence[core.Template],
    tags: Sequence[str] = (),
    time_from: str = "now-6h",
    refresh: str = "30s",
) -> core.Dashboard:
    """A BFM dashboard: uid ``bfm-<name>``, title ``BFM / <title>``, tagged ``bfm``, linked
    to the other BFM dashboards, shared crosshair, modern schema. Not editable in Grafana:
    the source is the ``*.dashboard.py`` file, and the next build would overwrite edits."""
    return core.Dashboard(
        title=f"BFM / {title}",
        uid=dashboard_uid(name),
        description=_required(title, description),
        tags=[TAG, *tags],
        panels=panels,
        templating=core.Templating(list=list(variables)),
        links=links_by_tag(),
        schemaVersion=SCHEMA_VERSION,
        graphTooltip=core.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=False,
        refresh=refresh,
        time=core.Time(time_from, "now"),
        timezone="browser",
    )
