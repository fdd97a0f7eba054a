"""Loki's query API over a :class:`~bfm_observe.logstore.store.LogStore`: request parameters
in, Loki's JSON response documents out. No sockets here (``server`` does HTTP).

Shapes and defaults follow Loki's HTTP API documentation
(https://grafana.com/docs/loki/latest/reference/loki-http-api/):

- times are nanosecond Unix integers, float seconds (``1700000000.5``), integer seconds
  (10 digits or fewer) or RFC 3339; ``start`` defaults to an hour before ``end``, ``end``
  to now; ``limit`` to 100 (at most :data:`MAX_LIMIT`, as Loki's
  ``max_entries_limit_per_query``); ``direction`` to ``backward``; ``step`` to a 250th of
  the range, at least 1 s (``5m``-style durations or float seconds);
- log queries answer ``streams`` (labels then ``[["<ns>", "line"], ...]``, the stream
  labels including structured metadata and parsed labels, as Loki's default encoding
  does); metric queries answer ``matrix`` (range) or ``vector`` (instant), values as
  ``[<unix s>, "<value>"]``, counted in SQL when they allow it
  (:meth:`~bfm_observe.logstore.store.LogStore.count_metric`), else evaluated over the
  lines;
- an instant query of logs is refused, as Loki 3 does;
- every error is :class:`ApiError` with the HTTP status and Loki's plain-text message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from bfm_observe.logstore.logql import (
    LogQLError,
    LogQuery,
    MetricQuery,
    parse,
    parse_duration,
)
from bfm_observe.logstore.logql_eval import LabelSet, eval_metric
from bfm_observe.logstore.store import LogStore

MAX_LIMIT = 5000
DEFAULT_LIMIT = 100
DEFAULT_RANGE_NS = 3600 * 10**9
MAX_POINTS = 11000  # Loki refuses queries of more points per series

Params = Mapping[str, Sequence[str]]


class ApiError(Exception):
    """A request Loki would refuse: ``status`` and the plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def parse_time_ns(text: str | None, default_ns: int, name: str) -> int:
    """A Loki time parameter: ns or s integers, float seconds or RFC 3339."""
    if text is None or text == "":
        return default_ns
    if "." in text and "T" not in text:
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return round(seconds * 1e9)
    if text.lstrip("-").isdigit():
        value = int(text)
        return value * 10**9 if len(text.lstrip("-")) <= 10 else value
    try:
        return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise ApiError(
            400,
            f'invalid parameter "{name}": cannot parse "{text}" as a nanosecond or second '
            "Unix time or an RFC 3339 timestamp",
        ) from None


def _limit(params: Params) -> int:
    text = _one(params, "limit")
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise ApiError(400, f'invalid parameter "limit": "{text}" is not an integer') from None
    if limit <= 0:
        raise ApiError(400, "limit must be a positive value")
    if limit > MAX_LIMIT:
        raise ApiError(
            400,
            "max entries limit per query exceeded, limit > max_entries_limit "
            f"({limit} > {MAX_LIMIT})",
        )
    return limit


def _direction(params: Params) -> Literal["backward", "forward"]:
    text = (_one(params, "direction") or "backward").lower()
    if text == "backward":
        return "backward"
    if text == "forward":
        return "forward"
    raise ApiError(400, f'invalid parameter "direction": "{text}"; use forward or backward')


def _step_ns(params: Params, start_ns: int, end_ns: int) -> int:
    text = _one(params, "step")
    if not text:
        return max(10**9, math.ceil((end_ns - start_ns) / 250 / 10**9) * 10**9)
    try:
        step_ns = round(float(text) * 1e9)
    except ValueError:
        parsed_ns = parse_duration(text)
        if parsed_ns is None:
            raise ApiError(
                400, f'invalid parameter "step": cannot parse "{text}" as seconds or a duration'
            ) from None
        step_ns = parsed_ns
    if step_ns <= 0:
        raise ApiError(
            400,
            "zero or negative query resolution step widths are not accepted. "
            "Try a positive integer",
        )
    if (end_ns - start_ns) // step_ns > MAX_POINTS:
        raise ApiError(
            400,
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the "
            "query resolution (?step=XX)",
        )
    return step_ns


def _query(params: Params) -> LogQuery | MetricQuery:
    text = _one(params, "query")
    if not text:
        raise ApiError(400, 'missing parameter "query"')
    try:
        return parse(text)
    except LogQLError as exc:
        raise ApiError(400, f"parse error : {exc}") from None


def _streams(found: Sequence[tuple[LabelSet, Any]]) -> list[dict[str, Any]]:
    streams: dict[LabelSet, list[list[str]]] = {}
    for labels, entry in found:
        streams.setdefault(labels, []).append([str(entry.ts_ns), entry.line])
    return [{"stream": dict(labels), "values": values} for labels, values in streams.items()]


def _success(result_type: str, result: list[dict[str, Any]], started_s: float) -> dict[str, Any]:
    elapsed_s = time.perf_counter() - started_s
    return {
        "status": "success",
        "data": {
            "resultType": result_type,
            "result": result,
            "stats": {"summary": {"execTime": elapsed_s}},
        },
    }


def _metric_window_ns(query: MetricQuery) -> int:
    """The longest range a metric query looks back over."""
    expr: Any = query.expr
    while not hasattr(expr, "range_ns"):
        expr = expr.inner
    return int(expr.range_ns)


def _matrix(
    store: LogStore, tenant: str, query: MetricQuery, start_ns: int, end_ns: int, step_ns: int
) -> dict[LabelSet, list[tuple[int, float]]]:
    """``eval_metric`` over the store: counted in SQL when the query allows it."""
    matrix = store.count_metric(tenant, query, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    if matrix is not None:
        return matrix
    window_ns = _metric_window_ns(query)
    entries = store.entries(tenant, query, start_ns=start_ns - window_ns, end_ns=end_ns + 1)
    try:
        return eval_metric(query, entries, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    except LogQLError as exc:
        raise ApiError(400, str(exc)) from None


def query_range(store: LogStore, tenant: str, params: Params, now_ns: int) -> dict[str, Any]:
    started_s = time.perf_counter()
    query = _query(params)
    end_ns = parse_time_ns(_one(params, "end"), now_ns, "end")
    start_ns = parse_time_ns(_one(params, "start"), end_ns - DEFAULT_RANGE_NS, "start")
    if end_ns < start_ns:
        raise ApiError(400, "end timestamp must not be before or equal to start time")
    limit = _limit(params)
    if isinstance(query, LogQuery):
        found = store.select(
            tenant,
            query,
            start_ns=start_ns,
            end_ns=end_ns,
            limit=limit,
            direction=_direction(params),
        )
        return _success("streams", _streams(found), started_s)
    step_ns = _step_ns(params, start_ns, end_ns)
    matrix = _matrix(store, tenant, query, start_ns, end_ns, step_ns)
    result = [
        {"metric": dict(labels), "values": [[t / 1e9, _number(v)] for t, v in points]}
        for labels, points in matrix.items()
    ]
    return _success("matrix", result, started_s)


def query_instant(store: LogStore, tenant: str, params: Params, now_ns: int) -> dict[str, Any]:
    started_s = time.perf_counter()
    query = _query(params)
    at_ns = parse_time_ns(_one(params, "time"), now_ns, "time")
    _limit(params)
    _direction(params)
    if isinstance(query, LogQuery):
        raise ApiError(
            400,
            "log queries are not supported as an instant query type, please change your "
            "query to a range query type",
        )
    matrix = _matrix(store, tenant, query, at_ns, at_ns, 1)
    result = [
        {"metric": dict(k), "value": [at_ns / 1e9, _number(points[0][1])]}
        for k, points in matrix.items()
    ]
    return _success("vector", result, started_s)


def _number(value: float) -> str:
    """Prometheus' float formatting: integers without a fraction."""
    return str(int(value)) if value.is_integer() else repr(value)


def _range(params: Params, now_ns: int) -> tuple[int, int]:
    end_ns = parse_time_ns(_one(params, "end"), now_ns, "end")
    start_ns = parse_time_ns(_one(params, "start"), end_ns - DEFAULT_RANGE_NS, "start")
    return start_ns, end_ns


def _selector(text: str, name: str) -> LogQuery:
    try:
        query = parse(text)
    except LogQLError as exc:
        raise ApiError(400, f"parse error : {exc}") from None
    if not isinstance(query, LogQuery):
        raise ApiError(400, f'"{name}" must be a stream selector, not a metric query')
    return query


def labels(store: LogStore, tenant: str, params: Params, now_ns: int) -> dict[str, Any]:
    start_ns, end_ns = _range(params, now_ns)
    return {"status": "success", "data": store.labels(tenant, start_ns=start_ns, end_ns=end_ns)}


def label_values(
    store: LogStore, tenant: str, name: str, params: Params, now_ns: int
) -> dict[str, Any]:
    start_ns, end_ns = _range(params, now_ns)
    text = _one(params, "query")
    query = _selector(text, "query") if text else None
    values = store.label_values(tenant, name, start_ns=start_ns, end_ns=end_ns, query=query)
    return {"status": "success", "data": values}


def series(store: LogStore, tenant: str, params: Params, now_ns: int) -> dict[str, Any]:
    start_ns, end_ns = _range(params, now_ns)
    matches = list(params.get("match[]", ())) or list(params.get("match", ()))
    if not matches:
        raise ApiError(400, 'at least one "match[]" stream selector is required')
    selectors = [_selector(m, "match[]") for m in matches]
    found = store.series(tenant, selectors, start_ns=start_ns, end_ns=end_ns)
    return {"status": "success", "data": found}


Handler = Callable[[LogStore, str, Params, int], dict[str, Any]]
QUERY_ROUTES: dict[str, Handler] = {
    "/loki/api/v1/query_range": query_range,
    "/loki/api/v1/query": query_instant,
    "/loki/api/v1/labels": labels,
    "/loki/api/v1/label": labels,
    "/loki/api/v1/series": series,
}
"""GET (or form-encoded POST) endpoints answered from the store; ``label/<name>/values``
is matched by the server."""
