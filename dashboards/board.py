"""How a BFM dashboard is put together (grafanalib): its stable uid, the links between BFM
dashboards, the row-by-row layout on Grafana's grid, and the dashboard itself.

``panels`` re-exports all of it, so a dashboard imports its helpers from one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
_UID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


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


def required(title: str, description: str) -> str:
    """``description`` stripped; a blank one is refused, naming the panel."""
    if not description.strip():
        raise ValueError(
            f"panel {title!r} has no description: say what it shows, where the numbers "
            "come from and what to do when it is red"
        )
    return description.strip()


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
    annotations: Sequence[dict[str, Any]] = (),
    time_from: str = "now-6h",
    refresh: str = "30s",
) -> core.Dashboard:
    """A BFM dashboard: uid ``bfm-<name>``, title ``BFM / <title>``, tagged ``bfm``, linked
    to the other BFM dashboards, shared crosshair, modern schema, ``annotations`` on every
    time axis (``decision_annotations()``). Not editable in Grafana: the source is the
    ``*.dashboard.py`` file, and the next build would overwrite edits."""
    return core.Dashboard(
        title=f"BFM / {title}",
        uid=dashboard_uid(name),
        description=required(title, description),
        tags=[TAG, *tags],
        panels=panels,
        annotations=core.Annotations(list=list(annotations)),
        templating=core.Templating(list=list(variables)),
        links=links_by_tag(),
        schemaVersion=SCHEMA_VERSION,
        graphTooltip=core.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=False,
        refresh=refresh,
        time=core.Time(time_from, "now"),
        timezone="browser",
    )
