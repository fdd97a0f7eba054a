"""What each panel of a dashboard preview shows, computed from the query results: the
JSON the page's script draws (``failover/dashboards_assets/preview.js``).

One ``panel_view`` per panel, by type: timeseries (aligned points, legend, threshold
lines, exemplars), stat (last value per series, mapped and coloured), state-timeline
(coloured bands), table (instant results through the panel's merge/organize
transformations), bargauge (bars), logs (the newest lines), traces (the spans), row (a
title bar). Every view carries the panel's errors and whether it has data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from failover.dashboards_format import css_color, field_display, palette_color
from failover.dashboards_query import Series, TargetResult, legend_name

MAX_LOG_LINES = 200  # newest lines drawn per logs panel: enough to read, small pages
MAX_SPANS = 50
_KINDS = {
    "timeseries": "timeseries",
    "graph": "timeseries",
    "stat": "stat",
    "gauge": "stat",
    "state-timeline": "state",
    "status-history": "state",
    "table": "table",
    "bargauge": "bars",
    "logs": "logs",
    "traces": "trace",
    "row": "row",
    "text": "text",
}


def panel_view(
    panel: Mapping[str, Any], results: Sequence[TargetResult], step_s: float
) -> dict[str, Any]:
    """The JSON-ready view of one panel from the results of its queries."""
    kind = _KINDS.get(str(panel.get("type")), "unsupported")
    grid = panel.get("gridPos") or {}
    view: dict[str, Any] = {
        "id": panel.get("id"),
        "title": str(panel.get("title") or ""),
        "type": str(panel.get("type") or ""),
        "kind": kind,
        "grid": {key: int(grid.get(key) or 0) for key in ("x", "y", "w", "h")},
        "errors": [f"{r.ref_id}: {r.error}" for r in results if r.error],
        "skipped": [r.skipped for r in results if r.skipped],
        "hasData": any(r.has_data() for r in results),
    }
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    builder = {
        "timeseries": _timeseries,
        "stat": _stat,
        "state": _state,
        "table": _table,
        "bars": _bars,
        "logs": _logs,
        "trace": _trace,
    }.get(kind)
    if builder is not None:
        view |= builder(panel, defaults, results, step_s)
    elif kind == "text":
        view["text"] = str((panel.get("options") or {}).get("content") or "")
    return view


def annotation_view(
    annotation: Mapping[str, Any], result: TargetResult, step_s: float
) -> dict[str, Any]:
    """An annotation's marks: time regions (start == end for one instant) and titles."""
    regions: list[list[Any]] = []
    for series in result.series:
        title = legend_name(result.legend, series.labels)
        times = [t for t, value in series.points if not math.isnan(value)]
        for start, end in _runs(times, step_s):
            regions.append([start, end, title])
    return {
        "name": str(annotation.get("name") or ""),
        "color": css_color(str(annotation.get("iconColor") or "red")),
        "regions": sorted(regions, key=lambda region: region[0]),
        "error": result.error,
    }


def _timeseries(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    custom = defaults.get("custom") or {}
    named = [(legend_name(r.legend, s.labels), s) for r in results for s in r.series if s.points]
    xs = sorted({t for _, series in named for t, _ in series.points})
    index = {t: i for i, t in enumerate(xs)}
    lines: list[dict[str, Any]] = []
    for number, (name, series) in enumerate(named):
        values: list[float | None] = [None] * len(xs)
        for t, value in series.points:
            values[index[t]] = None if not math.isfinite(value) else value
        finite = [v for v in values if v is not None]
        last = finite[-1] if finite else math.nan
        lines.append(
            {
                "name": name,
                "color": palette_color(number),
                "values": values,
                "last": field_display(last, defaults, color_by_value=False)[0],
                "max": field_display(max(finite, default=math.nan), defaults, color_by_value=False)[
                    0
                ],
            }
        )
    stacked = (custom.get("stacking") or {}).get("mode") == "normal"
    if stacked:
        _stack(lines)
    style = (custom.get("thresholdsStyle") or {}).get("mode", "off")
    steps = (defaults.get("thresholds") or {}).get("steps") or ()
    exemplars = [[t, v, trace] for r in results for s in r.series for t, v, trace in s.exemplars]
    return {
        "xs": xs,
        "series": lines,
        "unit": str(defaults.get("unit") or ""),
        "stacked": stacked,
        "bars": custom.get("drawStyle") == "bars",
        "fillOpacity": float(custom.get("fillOpacity") or 0),
        "thresholdLines": [
            {"value": step["value"], "color": css_color(step.get("color"))}
            for step in steps
            if style != "off" and step.get("value") is not None
        ],
        "exemplars": exemplars,
    }


def _stack(lines: list[dict[str, Any]]) -> None:
    """Stacked series: each drawn at the sum of itself and those before it, the top one
    first so that each lower one's fill shows over it."""
    totals: list[float] = []
    for line in lines:
        values = line["values"]
        totals = totals or [0.0] * len(values)
        for i, value in enumerate(values):
            if value is not None:
                totals[i] += value
                values[i] = totals[i]
    lines.reverse()


def _stat(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    items = []
    for result in results:
        for series in result.series:
            value = _last(series)
            if value is None:
                continue
            text, color = field_display(value, defaults)
            name = legend_name(result.legend, series.labels)
            items.append({"name": name, "text": text, "color": color})
    options = panel.get("options") or {}
    return {
        "items": items,
        "textMode": str(options.get("textMode") or "auto"),
        "noValue": str(defaults.get("noValue") or "no data"),
    }


def _state(
    panel: Mapping[str, Any],
    defaults: Mapping[str, Any],
    results: Sequence[TargetResult],
    step_s: float,
) -> dict[str, Any]:
    rows = []
    for result in results:
        for series in result.series:
            bands: list[dict[str, Any]] = []
            points = [(t, v) for t, v in series.points if not math.isnan(v)]
            for i, (t, value) in enumerate(points):
                following = points[i + 1][0] if i + 1 < len(points) else math.inf
                end = min(following, t + step_s)
                text, color = field_display(value, defaults)
                last = bands[-1] if bands else None
                if last and last["text"] == text and math.isclose(last["to"], t):
                    last["to"] = end
                else:
                    bands.append({"from": t, "to": end, "text": text, "color": color or "#8e8e8e"})
            if bands:
                rows.append({"name": legend_name(result.legend, series.labels), "bands": bands})
    return {"rows": rows}


def _bars(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    found = [
        (legend_name(r.legend, s.labels), value)
        for r in results
        for s in r.series
        if (value := _last(s)) is not None
    ]
    low = float(defaults.get("min") or 0)
    high = defaults.get("max")
    top = float(high) if high is not None else max((v for _, v in found), default=1.0)
    items = []
    for name, value in found:
        text, color = field_display(value, defaults)
        share = (value - low) / (top - low) if top > low else 0.0
        items.append(
            {"name": name, "text": text, "color": color, "fraction": min(1, max(0, share))}
        )
    return {"items": items}


def _table(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    transformations = panel.get("transformations") or ()
    several = len(results) > 1
    rows: list[dict[str, Any]] = []
    for result in results:
        value_column = f"Value #{result.ref_id}" if several else "Value"
        for series in result.series:
            row: dict[str, Any] = {"Time": series.points[-1][0] if series.points else None}
            row |= series.labels
            row[value_column] = series.points[-1][1] if series.points else None
            rows.append(row)
    if any(t.get("id") == "merge" for t in transformations):
        rows = _merged(rows)
    columns = _columns(rows)
    for transformation in transformations:
        if transformation.get("id") == "organize":
            columns, rows = _organized(columns, rows, transformation.get("options") or {})
    for sort in reversed((panel.get("options") or {}).get("sortBy") or ()):
        name, descending = sort.get("displayName"), bool(sort.get("desc"))
        rows.sort(key=lambda row: _sort_key(row.get(name)), reverse=descending)
    overrides = (panel.get("fieldConfig") or {}).get("overrides") or ()
    configs = {column: _column_config(column, defaults, overrides) for column in columns}
    return {
        "columns": columns,
        "rows": [
            [
                {"text": _iso(row[column]), "color": ""}
                if column == "Time" and isinstance(row.get(column), float)
                else _cell(row.get(column), configs[column])
                for column in columns
            ]
            for row in rows
        ],
    }


def _merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grafana's merge: rows with the same labels joined, each query's value in its column."""
    joined: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(sorted((k, v) for k, v in row.items() if isinstance(v, str)))
        joined.setdefault(key, {}).update(row)
    return list(joined.values())


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = {name for row in rows for name in row}
    values = sorted(name for name in names if name.startswith("Value"))
    labels = sorted(names - set(values) - {"Time"})
    return (["Time"] if "Time" in names else []) + labels + values


def _organized(
    columns: list[str], rows: list[dict[str, Any]], options: Mapping[str, Any]
) -> tuple[list[str], list[dict[str, Any]]]:
    excluded = {name for name, hide in (options.get("excludeByName") or {}).items() if hide}
    renamed: Mapping[str, str] = options.get("renameByName") or {}
    order: Mapping[str, int] = options.get("indexByName") or {}
    kept = [column for column in columns if column not in excluded]
    position = {column: order.get(column, len(order) + i) for i, column in enumerate(kept)}
    kept.sort(key=position.__getitem__)
    new_rows = [{renamed.get(k, k): v for k, v in row.items() if k in kept} for row in rows]
    return [renamed.get(column, column) for column in kept], new_rows


def _column_config(
    column: str, defaults: Mapping[str, Any], overrides: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    config = dict(defaults)
    for override in overrides:
        matcher = override.get("matcher") or {}
        if matcher.get("id") == "byName" and matcher.get("options") == column:
            config |= {p.get("id"): p.get("value") for p in override.get("properties") or ()}
    return config


def _cell(value: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    if value is None:
        return {"text": "", "color": ""}
    text, color = field_display(value, config)
    options = config.get("custom.cellOptions") or {}
    shown_as = options.get("type") or config.get("custom.displayMode")
    coloured = shown_as in ("color-background", "color-text", "gauge")
    return {"text": text, "color": color if coloured else ""}


def _logs(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    lines = [(t, line, s.labels) for r in results for s in r.series for t, line in s.lines]
    lines.sort(key=lambda entry: entry[0], reverse=True)
    newest = lines[:MAX_LOG_LINES]
    if (panel.get("options") or {}).get("sortOrder") == "Ascending":
        newest.reverse()
    return {
        "lines": [
            {"time": _iso(t), "labels": _label_text(labels), "line": line}
            for t, line, labels in newest
        ],
        "total": len(lines),
    }


def _trace(
    panel: Mapping[str, Any], defaults: Mapping[str, Any], results: Sequence[TargetResult], _: float
) -> dict[str, Any]:
    spans = sorted((s for r in results for s in r.series if s.points), key=lambda s: s.points[0][0])
    if not spans:
        return {"summary": "", "spans": []}
    start = spans[0].points[0][0]
    end = max(s.points[0][0] + s.points[0][1] for s in spans)
    services = sorted({s.labels.get("service", "") for s in spans} - {""})
    summary = (
        f"{_count(len(spans), 'span')} from {_count(len(services), 'service')} "
        f"({', '.join(services)}), "
        f"{(end - start) * 1000:.1f} ms from the first start to the last end"
    )
    return {
        "summary": summary,
        "spans": [
            {
                "service": s.labels.get("service", ""),
                "name": s.labels.get("name", ""),
                "offset_ms": round((s.points[0][0] - start) * 1000, 3),
                "duration_ms": round(s.points[0][1] * 1000, 3),
            }
            for s in spans[:MAX_SPANS]
        ],
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _runs(times: Sequence[float], step_s: float) -> list[tuple[float, float]]:
    """Times grouped into (first, last) runs no more than 1.5 steps apart."""
    runs: list[tuple[float, float]] = []
    for t in sorted(times):
        if runs and t - runs[-1][1] <= 1.5 * step_s:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def _last(series: Series) -> float | None:
    """Grafana's lastNotNull: the newest value that is a number."""
    finite = [value for _, value in series.points if not math.isnan(value)]
    return finite[-1] if finite else None


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value or ""))


def _label_text(labels: Mapping[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _iso(time_s: float) -> str:
    moment = datetime.fromtimestamp(time_s, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
