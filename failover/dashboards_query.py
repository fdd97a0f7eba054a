"""Run a Grafana dashboard's queries the way Grafana would, over HTTP, without Grafana.

Variables are expanded as Grafana expands them (label variables, text boxes, the built-ins
``$__interval``, ``$__rate_interval``, ``$__range``, ...), then each query goes to its
backend: Prometheus (``/api/v1/query``, ``query_range``, ``query_exemplars``), Loki or
BFM's log store (``/loki/api/v1/query_range``) and Tempo's trace by id
(``/api/traces/<id>``, which the log store serves too). A backend that is not given, does
not answer or answers an error becomes the ``error`` of that query's result: nothing here
raises for a backend's sake. ``bfm dashboards preview`` draws the results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import requests

from failover.dashboards_vars import (
    ALL,
    LOKI_ALL,
    PROMETHEUS_ALL,
    UnknownVariable,
    Window,
    datasource_type,
    duration_text,
    expand,
    interval_s,
    legend_name,
    regex_escape,
    variable_values,
    variables,
)

__all__ = [
    "ALL",
    "LOKI_ALL",
    "PROMETHEUS_ALL",
    "Backends",
    "Series",
    "TargetResult",
    "UnknownVariable",
    "Window",
    "annotation_queries",
    "dashboard_panels",
    "duration_text",
    "expand",
    "legend_name",
    "regex_escape",
    "run_dashboard",
    "run_target",
    "variable_values",
    "variables",
]

DEFAULT_MAX_LINES = 1000  # Grafana's default for a Loki query without maxLines
_WORKERS = 4
_BODY_CHARS = 300
_NAMES = {"prometheus": "Prometheus", "loki": "Loki", "tempo": "the trace store"}


@dataclass(frozen=True)
class Series:
    """One series of an answer: a metric's points, a log stream's lines, or one span
    (labels ``service``, ``name``, ``span_id``, ...; one point: start, duration in s)."""

    labels: dict[str, str]
    points: tuple[tuple[float, float], ...] = ()  # (unix s, value); NaN kept
    lines: tuple[tuple[float, str], ...] = ()  # (unix s, line) of a log stream
    exemplars: tuple[tuple[float, float, str], ...] = ()  # (unix s, value, trace_id)


@dataclass(frozen=True)
class TargetResult:
    """What one query of one panel (or one annotation) answered."""

    dashboard: str  # the dashboard's uid
    panel: str  # the panel's title ("annotation: <name>" for annotations)
    panel_type: str  # "timeseries", "stat", ... ("annotation")
    ref_id: str
    datasource: str  # "prometheus" | "loki" | "tempo"
    expr: str  # as sent (expanded)
    legend: str
    instant: bool
    series: tuple[Series, ...] = ()
    error: str = ""  # the backend's message, or why it could not be asked
    skipped: str = ""  # why it was not run

    def label_values(self, name: str) -> set[str]:
        return {series.labels[name] for series in self.series if name in series.labels}

    def has_data(self) -> bool:
        return any(series.points or series.lines for series in self.series)


@dataclass(frozen=True)
class Backends:
    """Base URLs (``http://host:port``); "" for a backend not available."""

    prometheus_url: str = ""
    loki_url: str = ""
    traces_url: str = ""
    timeout_s: float = 10.0


def dashboard_panels(model: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel in reading order, rows included, a collapsed row's panels after it."""
    for panel in model.get("panels") or ():
        if isinstance(panel, dict):
            yield panel
            yield from (inner for inner in panel.get("panels") or () if isinstance(inner, dict))


def annotation_queries(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The enabled annotations that carry a query (Grafana's own ones carry none)."""
    found = (model.get("annotations") or {}).get("list") or ()
    return [a for a in found if isinstance(a, dict) and a.get("expr") and a.get("enable", True)]


def run_target(
    model: Mapping[str, Any],
    panel: Mapping[str, Any],
    target: Mapping[str, Any],
    backends: Backends,
    window: Window,
    values: Mapping[str, str],
) -> TargetResult:
    """One query of ``panel``, expanded with ``values`` and the window's built-ins."""
    return _run(model, panel, target, backends, window, values, _Unreachable())


def run_dashboard(
    model: Mapping[str, Any],
    backends: Backends,
    window: Window,
    selections: Mapping[str, Sequence[str]] | None = None,
    *,
    annotations: bool = True,
) -> list[TargetResult]:
    """Every visible query of every panel (then every annotation), in reading order. A
    backend that does not answer is asked once: its later queries carry the same error."""
    values = variable_values(model, selections)
    jobs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = [
        (panel, target)
        for panel in dashboard_panels(model)
        if panel.get("type") != "row"
        for target in panel.get("targets") or ()
        if isinstance(target, dict) and not target.get("hide")
    ]
    if annotations:
        jobs += [_annotation_job(annotation) for annotation in annotation_queries(model)]
    unreachable = _Unreachable()
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        return list(
            pool.map(
                lambda job: _run(model, job[0], job[1], backends, window, values, unreachable),
                jobs,
            )
        )


class _Failed(Exception):
    """A query that could not be answered; the message is the result's error."""


class _Unreachable:
    """Backends that did not answer during one run, with the message each gave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, str] = {}

    def get(self, base: str) -> str:
        with self._lock:
            return self._messages.get(base, "")

    def put(self, base: str, message: str) -> None:
        with self._lock:
            self._messages.setdefault(base, message)


def _run(
    model: Mapping[str, Any],
    panel: Mapping[str, Any],
    target: Mapping[str, Any],
    backends: Backends,
    window: Window,
    values: Mapping[str, str],
    unreachable: _Unreachable,
) -> TargetResult:
    kind = datasource_type(model, panel, target)
    raw = str(target.get("expr") or target.get("query") or "")
    result = TargetResult(
        dashboard=str(model.get("uid", "")),
        panel=str(panel.get("title", "")),
        panel_type=str(panel.get("type", "")),
        ref_id=str(target.get("refId", "")),
        datasource=kind,
        expr=raw,
        legend=str(target.get("legendFormat") or ""),
        instant=bool(target.get("instant")),
    )
    try:
        result = replace(result, expr=expand(raw, {**window.builtins(), **values}))
    except UnknownVariable as err:
        return replace(result, error=str(err))
    if kind not in _NAMES:
        return replace(result, error=f"a {kind!r} datasource cannot be queried here")
    if kind == "tempo" and not result.expr.strip():
        return replace(result, skipped=f"{raw} is empty: no trace id was chosen")
    base = {
        "prometheus": backends.prometheus_url,
        "loki": backends.loki_url,
        "tempo": backends.traces_url,
    }[kind].rstrip("/")
    if not base:
        return replace(result, error=f"no URL was given for {_NAMES[kind]}, so it was not asked")
    ask = _Asker(base, backends.timeout_s, unreachable)
    step_s = max(window.step_s, interval_s(str(target.get("interval") or "")))
    try:
        if kind == "tempo":
            return replace(result, series=_trace(ask, result.expr.strip()))
        if kind == "loki":
            return replace(result, series=_loki(ask, result, target, window, step_s))
        series, error = _prometheus(ask, result, target, window, step_s)
        return replace(result, series=series, error=error)
    except _Failed as err:
        return replace(result, error=str(err))
    except (ValueError, TypeError) as err:  # a target this cannot read (e.g. maxLines "x")
        return replace(result, error=f"the query's settings cannot be used: {err}")


@dataclass(frozen=True)
class _Asker:
    base: str
    timeout_s: float
    unreachable: _Unreachable

    def json(self, path: str, params: Mapping[str, str], *, not_found: Any = ...) -> Any:
        """The JSON body of ``GET base+path``; ``not_found`` (when given) for a 404."""
        known = self.unreachable.get(self.base)
        if known:
            raise _Failed(known)
        url = self.base + path
        try:
            answer = requests.get(url, params=params, timeout=self.timeout_s)
        except requests.RequestException as err:
            message = f"cannot reach {self.base} ({_reason(err, self.timeout_s)}): is it running?"
            if isinstance(err, requests.ConnectionError):
                self.unreachable.put(self.base, message)
            raise _Failed(message) from None
        if answer.status_code == 404 and not_found is not ...:
            return not_found
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code >= 400 or not isinstance(body, dict) or body.get("status") == "error":
            detail = body.get("error") if isinstance(body, dict) else None
            text = " ".join(str(detail or answer.text or "(empty body)").split())[:_BODY_CHARS]
            raise _Failed(f"{url} answered {answer.status_code}: {text}")
        return body


def _prometheus(
    ask: _Asker,
    result: TargetResult,
    target: Mapping[str, Any],
    window: Window,
    step_s: float,
) -> tuple[tuple[Series, ...], str]:
    if result.instant:
        params = {"query": result.expr, "time": _number(window.end_s)}
        body = ask.json("/api/v1/query", params)
    else:
        params = _range_params(result.expr, window) | {"step": _number(step_s)}
        body = ask.json("/api/v1/query_range", params)
    series = _parsed(ask, lambda: _metric_series(body["data"]))
    if not target.get("exemplar"):
        return series, ""
    try:
        found = ask.json("/api/v1/query_exemplars", _range_params(result.expr, window))
    except _Failed as err:
        return series, f"exemplars: {err}"
    return _parsed(ask, lambda: _with_exemplars(series, found["data"] or [])), ""


def _loki(
    ask: _Asker,
    result: TargetResult,
    target: Mapping[str, Any],
    window: Window,
    step_s: float,
) -> tuple[Series, ...]:
    limit = str(int(target.get("maxLines") or DEFAULT_MAX_LINES))
    params = {"query": result.expr, "limit": limit, "direction": "backward"}
    if result.instant:
        body = ask.json("/loki/api/v1/query", params | {"time": str(_ns(window.end_s))})
    else:
        params |= {"start": str(_ns(window.start_s)), "end": str(_ns(window.end_s))}
        body = ask.json("/loki/api/v1/query_range", params | {"step": _number(step_s)})
    return _parsed(ask, lambda: _metric_series(body["data"]))


def _trace(ask: _Asker, trace_id: str) -> tuple[Series, ...]:
    body = ask.json(f"/api/traces/{quote(trace_id.lower(), safe='')}", {}, not_found={})
    return _parsed(ask, lambda: _spans(body))


def _parsed(ask: _Asker, parse: Callable[[], Iterable[Series]]) -> tuple[Series, ...]:
    try:
        return tuple(parse())
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise _Failed(
            f"{ask.base} answered with a body this cannot read ({type(err).__name__}: {err})"
        ) from None


def _metric_series(data: Mapping[str, Any]) -> list[Series]:
    """Prometheus' and Loki's ``data``: matrix, vector, scalar, string or streams."""
    kind, result = data["resultType"], data["result"]
    if kind in ("scalar", "string"):
        result = [{"metric": {}, "value": result}]
    found: list[Series] = []
    for item in result:
        if kind == "streams":
            lines = tuple((int(ns) / 1e9, str(line)) for ns, line, *_ in item["values"])
            found.append(Series(_labels(item.get("stream")), lines=lines))
        elif kind == "string":
            time_s, text = item["value"]
            found.append(Series({}, lines=((float(time_s), str(text)),)))
        else:
            pairs = item["values"] if "values" in item else [item["value"]]
            points = tuple((float(t), float(v)) for t, v in pairs)
            found.append(Series(_labels(item.get("metric")), points=points))
    return found


def _with_exemplars(series: tuple[Series, ...], groups: Sequence[Any]) -> list[Series]:
    """Each exemplar group attached to the most specific series whose labels all appear
    in the group's series labels, else kept as a series of its own."""
    out = list(series)
    for group in groups:
        labels = _labels(group.get("seriesLabels"))
        found = tuple(
            (
                float(e["timestamp"]),
                float(e["value"]),
                str((e.get("labels") or {}).get("trace_id", "")),
            )
            for e in group.get("exemplars") or ()
        )
        fits = [i for i, s in enumerate(out) if s.labels.items() <= labels.items()]
        if fits:
            best = max(fits, key=lambda i: len(out[i].labels))
            out[best] = replace(out[best], exemplars=out[best].exemplars + found)
        else:
            out.append(Series(labels, exemplars=found))
    return out


def _spans(body: Mapping[str, Any]) -> list[Series]:
    """Tempo's trace JSON, v1 ``{"batches": [...]}`` or v2 ``{"trace": {"resourceSpans"}}``."""
    batches = body.get("batches") or (body.get("trace") or {}).get("resourceSpans") or ()
    found: list[Series] = []
    for batch in batches:
        attributes = (batch.get("resource") or {}).get("attributes") or ()
        service = next(
            (
                str(a["value"].get("stringValue", ""))
                for a in attributes
                if a.get("key") == "service.name"
            ),
            "",
        )
        scopes = batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or ()
        for span in (span for scope in scopes for span in scope.get("spans") or ()):
            start_ns, end_ns = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
            labels = {
                "service": service,
                "name": str(span.get("name", "")),
                "span_id": str(span.get("spanId", "")),
                "parent_span_id": str(span.get("parentSpanId", "")),
                "status": str((span.get("status") or {}).get("code", 0)),
            }
            found.append(Series(labels, points=((start_ns / 1e9, (end_ns - start_ns) / 1e9),)))
    return found


def _annotation_job(annotation: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    name = str(annotation.get("name", ""))
    panel = {
        "title": f"annotation: {name}",
        "type": "annotation",
        "datasource": annotation.get("datasource"),
    }
    target = {
        "expr": annotation["expr"],
        "refId": "Anno",
        "legendFormat": annotation.get("titleFormat") or name,
        "datasource": annotation.get("datasource"),
        "interval": annotation.get("step") or "",
    }
    return panel, target


def _labels(value: Any) -> dict[str, str]:
    return {str(key): str(val) for key, val in (value or {}).items()}


def _range_params(expr: str, window: Window) -> dict[str, str]:
    return {"query": expr, "start": _number(window.start_s), "end": _number(window.end_s)}


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _reason(err: requests.RequestException, timeout_s: float) -> str:
    if isinstance(err, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    text = str(err)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known in text:
            return known.lower()
    return type(err).__name__
