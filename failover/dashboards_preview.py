"""Static previews of the dashboards without Grafana (`bfm dashboards preview`).

Each dashboard's queries run against the real backends (``failover.dashboards_query``);
the answers become one self-contained HTML page per dashboard, ``<out>/<uid>.html``,
with uPlot (vendored in ``failover/dashboards_assets``, MIT) and the page's script
inlined, so it opens offline from ``file://``. ``<out>/index.html`` links the pages. A
query that failed shows its error in its panel; the page is written all the same.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from failover.dashboards_query import (
    ALL,
    Backends,
    TargetResult,
    Window,
    annotation_queries,
    dashboard_panels,
    duration_text,
    run_dashboard,
    variables,
)
from failover.dashboards_views import annotation_view, panel_view

UPLOT_VERSION = "1.6.32"  # failover/dashboards_assets/uPlot.* (npm package uplot)
ASSETS = ("uPlot.min.css", "preview.css", "uPlot.iife.min.js", "preview.js")
INDEX = "index.html"


@dataclass(frozen=True)
class Preview:
    """One page written: which dashboard, where, and how its queries went."""

    uid: str
    title: str
    path: Path
    panels: int
    results: tuple[TargetResult, ...]

    @property
    def failed(self) -> list[TargetResult]:
        return [result for result in self.results if result.error]


def asset_text(name: str) -> str:
    """A vendored file of ``failover/dashboards_assets``."""
    return (resources.files("failover") / "dashboards_assets" / name).read_text(encoding="utf-8")


def page_data(
    model: Mapping[str, Any],
    results: Sequence[TargetResult],
    window: Window,
    selections: Mapping[str, Sequence[str]] | None = None,
    *,
    source: str = "",
) -> dict[str, Any]:
    """The JSON the page's script draws: header, annotations and one view per panel.
    ``results`` are ``run_dashboard``'s, in its order (panels, then annotations)."""
    panels = list(dashboard_panels(model))
    remaining = list(results)
    views = []
    for panel in panels:
        count = sum(
            1
            for target in panel.get("targets") or ()
            if isinstance(target, dict) and not target.get("hide")
        )
        mine = remaining[:count] if panel.get("type") != "row" else []
        del remaining[: len(mine)]
        views.append(panel_view(panel, mine, window.step_s))
    marks = [
        annotation_view(annotation, result, window.step_s)
        for annotation, result in zip(annotation_queries(model), remaining, strict=False)
    ]
    return {
        "uid": str(model.get("uid") or ""),
        "title": str(model.get("title") or ""),
        "range": {"start_s": window.start_s, "end_s": window.end_s, "text": range_text(window)},
        "selections": _selections_shown(model, selections or {}),
        "annotations": marks,
        "panels": views,
        "generated": source,
    }


def render_html(data: Mapping[str, Any]) -> str:
    """The self-contained page: styles, the data, uPlot and the drawing script inline."""
    css = "\n".join(asset_text(name) for name in ASSETS if name.endswith(".css"))
    scripts = "\n".join(
        f"<script>\n{asset_text(name)}\n</script>" for name in ASSETS if name.endswith(".js")
    )
    # "</" cannot appear inside a <script> element; NaN has no JSON form (null instead).
    payload = json.dumps(_finite(data), allow_nan=False, ensure_ascii=False).replace("</", "<\\/")
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(str(data.get('title', '')))} (preview)</title>\n"
        f"<style>\n{css}\n</style>\n</head>\n<body>\n"
        f'<script id="bfm-data" type="application/json">{payload}</script>\n'
        f"{scripts}\n</body>\n</html>\n"
    )


class HasModel(Protocol):
    """A built dashboard (``dashboards_build.BuiltDashboard``): anything with a ``model``."""

    @property
    def model(self) -> dict[str, Any]: ...


def write_previews(
    dashboards: Sequence[Mapping[str, Any] | HasModel],
    backends: Backends,
    window: Window,
    out: Path,
    selections: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """``preview_dashboards`` for JSON models or built dashboards; the pages' paths."""
    models = [item if isinstance(item, Mapping) else item.model for item in dashboards]
    return [page.path for page in preview_dashboards(models, backends, window, out, selections)]


def preview_dashboards(
    models: Sequence[Mapping[str, Any]],
    backends: Backends,
    window: Window,
    out: Path,
    selections: Mapping[str, Sequence[str]] | None = None,
) -> list[Preview]:
    """Query and write ``<out>/<uid>.html`` for each model, then ``<out>/index.html``.
    ``OSError`` when ``out`` cannot be written."""
    out.mkdir(parents=True, exist_ok=True)
    source = "drawn by bfm dashboards preview from " + ", ".join(
        f"{name} {url}"
        for name, url in (
            ("Prometheus", backends.prometheus_url),
            ("Loki", backends.loki_url),
            ("traces", backends.traces_url),
        )
        if url
    )
    previews = []
    for model in models:
        results = run_dashboard(model, backends, window, selections)
        data = page_data(model, results, window, selections, source=source)
        path = out / f"{data['uid']}.html"
        path.write_text(render_html(data), encoding="utf-8")
        previews.append(
            Preview(data["uid"], data["title"], path, len(data["panels"]), tuple(results))
        )
    (out / INDEX).write_text(index_html(previews, window), encoding="utf-8")
    return previews


def index_html(previews: Sequence[Preview], window: Window) -> str:
    """A page linking every preview, with how many of its queries failed."""
    items = "\n".join(
        f'<li><a href="{html.escape(p.path.name)}">{html.escape(p.title)}</a> '
        f"({p.panels} panels, {len(p.results)} queries"
        + (f', <span class="panel-error">{len(p.failed)} failed</span>' if p.failed else "")
        + ")</li>"
        for p in previews
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>BFM dashboards (preview)</title>\n<style>\n{asset_text('preview.css')}\n"
        "</style>\n</head>\n<body>\n<h1>BFM dashboards (preview)</h1>\n"
        f'<p>{html.escape(range_text(window))}</p>\n<ul class="index">\n{items}\n</ul>\n'
        "</body>\n</html>\n"
    )


def range_text(window: Window) -> str:
    """``2024-05-01 12:00:00 to 12:15:00 UTC (15 minutes)``."""
    start = datetime.fromtimestamp(window.start_s, tz=UTC)
    end = datetime.fromtimestamp(window.end_s, tz=UTC)
    end_text = end.strftime("%H:%M:%S" if end.date() == start.date() else "%Y-%m-%d %H:%M:%S")
    length = duration_text(window.end_s - window.start_s)
    return f"{start:%Y-%m-%d %H:%M:%S} to {end_text} UTC ({length})"


def _selections_shown(
    model: Mapping[str, Any], selections: Mapping[str, Sequence[str]]
) -> list[list[str]]:
    shown = []
    for variable in variables(model):
        name = variable.get("name")
        if not isinstance(name, str) or variable.get("type") == "datasource":
            continue
        picked = selections.get(name) or ()
        picked = [picked] if isinstance(picked, str) else list(picked)
        if variable.get("type") == "textbox":
            text = picked[0] if picked else str((variable.get("current") or {}).get("value") or "")
            shown.append([name, text or "(empty)"])
        else:
            shown.append([name, "All" if not picked or ALL in picked else ", ".join(picked)])
    return shown


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
