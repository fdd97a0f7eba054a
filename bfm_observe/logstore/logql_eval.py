"""Evaluation of the LogQL subset parsed by :mod:`bfm_observe.logstore.logql`.

Semantics follow Loki (https://grafana.com/docs/loki/latest/query/log_queries/,
https://grafana.com/docs/loki/latest/query/metric_queries/):

- A missing label reads as ``""`` in matchers and string label filters.
- Structured metadata and ``| json`` fields join the entry's labels; a name that collides
  with a stream label gets the ``_extracted`` suffix. Labels with empty values are dropped
  from result label sets (as Prometheus label sets do).
- ``| json`` flattens nested objects with ``_`` (``{"a":{"b":1}}`` gives ``a_b="1"``),
  skips arrays and nulls, keeps numbers as written; a line that is not a JSON object keeps
  going with ``__error__="JSONParserErr"``.
- A numeric label filter drops entries without the label and marks a non-numeric value
  with ``__error__="LabelFilterErr"``; entries already in error pass numeric filters.
- Metric queries refuse series that carry ``__error__`` (as Loki does), so filter them
  with ``| __error__=""``.
- Range windows are ``(t - range, t]``; steps with no entries have no point.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from bfm_observe.logstore.logql import (
    Entry,
    JsonStage,
    LabelFilter,
    LabelFilterStage,
    LineFilter,
    LogQLError,
    LogQuery,
    MetricExpr,
    MetricQuery,
    NumericLabelFilter,
    OrAndLabelFilter,
    RangeAggregation,
    StringLabelFilter,
    VectorAggregation,
    select_streams,
)

__all__ = [
    "LabelSet",
    "eval_instant",
    "eval_log",
    "eval_metric",
    "eval_streams",
    "run_pipeline",
]

LabelSet = tuple[tuple[str, str], ...]
"""Sorted ``(name, value)`` pairs: a series' or result stream's identity."""

ERROR_LABEL = "__error__"
EXTRACTED_SUFFIX = "_extracted"
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_]")


def label_set(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


# --- pipeline --------------------------------------------------------------------------


class _Number(str):
    """A JSON number kept as written, as Loki keeps it."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _sanitize(key: str) -> str:
    return _NOT_LABEL_CHAR.sub("_", key)


def _flatten(obj: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in obj.items():
        if not key:
            continue
        name = f"{prefix}_{_sanitize(key)}" if prefix else _sanitize(key)
        if isinstance(value, dict):
            _flatten(value, name, out)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str):  # str and _Number
            out[name] = str(value)
        # lists and null are skipped


def _parse_json(line: str) -> dict[str, str] | None:
    try:
        obj = json.loads(
            line, parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    out: dict[str, str] = {}
    _flatten(obj, "", out)
    return {(f"_{k}" if k[0].isdigit() else k): v for k, v in out.items()}


def _label_filter(expr: LabelFilter, labels: dict[str, str]) -> bool:
    if isinstance(expr, OrAndLabelFilter):
        if expr.op == "and":
            return _label_filter(expr.left, labels) and _label_filter(expr.right, labels)
        return _label_filter(expr.left, labels) or _label_filter(expr.right, labels)
    if isinstance(expr, StringLabelFilter):
        return expr.matcher.matches(labels.get(expr.matcher.name, ""))
    return _numeric_filter(expr, labels)


def _numeric_filter(expr: NumericLabelFilter, labels: dict[str, str]) -> bool:
    if ERROR_LABEL in labels:
        return True
    raw = labels.get(expr.name)
    if raw is None:
        return False
    try:
        value = float(raw.strip())
    except ValueError:
        labels[ERROR_LABEL] = "LabelFilterErr"
        return True
    target = expr.value
    match expr.op:
        case "==":
            return value == target
        case "!=":
            return value != target
        case ">":
            return value > target
        case ">=":
            return value >= target
        case "<":
            return value < target
        case _:
            return value <= target


def run_pipeline(query: LogQuery, entry: Entry) -> dict[str, str] | None:
    """The entry's labels after the pipeline, or None when a filter drops it.

    The stream selector is not checked here (see :func:`select_streams`).
    """
    labels = dict(entry.labels)
    for key, value in entry.metadata.items():
        labels[key + EXTRACTED_SUFFIX if key in entry.labels else key] = value
    for stage in query.stages:
        if isinstance(stage, LineFilter):
            if not stage.matches(entry.line):
                return None
        elif isinstance(stage, JsonStage):
            if ERROR_LABEL in labels:
                continue
            fields = _parse_json(entry.line)
            if fields is None:
                labels[ERROR_LABEL] = "JSONParserErr"
                continue
            for key, value in fields.items():
                labels[key + EXTRACTED_SUFFIX if key in entry.labels else key] = value
        elif isinstance(stage, LabelFilterStage) and not _label_filter(stage.expr, labels):
            return None
    return labels


# --- log queries -----------------------------------------------------------------------


def eval_log(
    query: LogQuery,
    entries: Iterable[Entry],
    *,
    limit: int,
    direction: Literal["backward", "forward"] = "backward",
) -> list[tuple[LabelSet, Entry]]:
    """Matching entries with their result-stream labels, newest first (``backward``) or
    oldest first (``forward``), at most ``limit`` of them across all streams."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if direction not in ("backward", "forward"):
        raise ValueError(f"direction must be backward or forward, not {direction!r}")
    found: list[tuple[LabelSet, Entry]] = []
    for entry in entries:
        if not select_streams(query, entry.labels):
            continue
        labels = run_pipeline(query, entry)
        if labels is not None:
            found.append((label_set(labels), entry))
    backward = direction == "backward"
    found.sort(key=lambda item: (item[1].ts_ns, item[0], item[1].line), reverse=backward)
    return found[:limit]


def eval_streams(
    query: LogQuery,
    entries: Iterable[Entry],
    *,
    limit: int,
    direction: Literal["backward", "forward"] = "backward",
) -> dict[LabelSet, list[Entry]]:
    """Loki's ``streams`` result: :func:`eval_log` grouped by final label set."""
    streams: dict[LabelSet, list[Entry]] = {}
    for labels, entry in eval_log(query, entries, limit=limit, direction=direction):
        streams.setdefault(labels, []).append(entry)
    return streams


# --- metric queries --------------------------------------------------------------------

Vector = dict[LabelSet, float]


def _series(agg: RangeAggregation, entries: Iterable[Entry]) -> dict[LabelSet, list[int]]:
    series: dict[LabelSet, list[int]] = {}
    for entry in entries:
        if not select_streams(agg.query, entry.labels):
            continue
        labels = run_pipeline(agg.query, entry)
        if labels is None:
            continue
        key = label_set(labels)
        if ERROR_LABEL in labels:
            err = labels[ERROR_LABEL]
            shown = "{" + ", ".join(f'{k}="{v}"' for k, v in key) + "}"
            raise LogQLError(
                f"pipeline error: '{err}' for series: '{shown}'. Use a label "
                f'filter to intentionally skip this error (e.g. | __error__!="{err}")'
            )
        series.setdefault(key, []).append(entry.ts_ns)
    for stamps in series.values():
        stamps.sort()
    return series


def _range_vectors(
    agg: RangeAggregation, entries: Iterable[Entry], steps: list[int]
) -> list[Vector]:
    series = _series(agg, entries)
    seconds = agg.range_ns / 1e9
    vectors: list[Vector] = []
    for t in steps:
        vector: Vector = {}
        for key, stamps in series.items():
            count = bisect_right(stamps, t) - bisect_right(stamps, t - agg.range_ns)
            if count:
                vector[key] = count / seconds if agg.func == "rate" else float(count)
        vectors.append(vector)
    return vectors


def group_by(key: LabelSet, by: tuple[str, ...]) -> LabelSet:
    """The labels of ``key`` named in ``by`` (``sum by``/``topk by`` grouping)."""
    return tuple((k, v) for k, v in key if k in by)


Number = TypeVar("Number", int, float)


def aggregate(agg: VectorAggregation, vector: Mapping[LabelSet, Number]) -> dict[LabelSet, Number]:
    """``sum``/``topk`` of one instant's vector (counts or rates alike)."""
    out: dict[LabelSet, Number] = {}
    if agg.op == "sum":
        for key, value in vector.items():
            group = group_by(key, agg.by)
            out[group] = out.get(group, 0) + value
        return out
    groups: dict[LabelSet, list[tuple[LabelSet, Number]]] = {}
    for key, value in vector.items():
        groups.setdefault(group_by(key, agg.by), []).append((key, value))
    for members in groups.values():
        members.sort(key=lambda kv: (-kv[1], kv[0]))
        out.update(members[: agg.k])
    return out


def _vectors(expr: MetricExpr, entries: Iterable[Entry], steps: list[int]) -> list[Vector]:
    if isinstance(expr, RangeAggregation):
        return _range_vectors(expr, entries, steps)
    return [aggregate(expr, vector) for vector in _vectors(expr.inner, entries, steps)]


def eval_metric(
    query: MetricQuery, entries: Iterable[Entry], *, start_ns: int, end_ns: int, step_ns: int
) -> dict[LabelSet, list[tuple[int, float]]]:
    """A ``matrix``: each series' points at ``start, start + step, ... <= end``."""
    if step_ns <= 0:
        raise ValueError("step must be positive")
    if end_ns < start_ns:
        raise ValueError("end must not be before start")
    steps = list(range(start_ns, end_ns + 1, step_ns))
    matrix: dict[LabelSet, list[tuple[int, float]]] = {}
    for t, vector in zip(steps, _vectors(query.expr, entries, steps), strict=True):
        for key, value in vector.items():
            matrix.setdefault(key, []).append((t, value))
    return dict(sorted(matrix.items()))


def eval_instant(query: MetricQuery, entries: Iterable[Entry], at_ns: int) -> Vector:
    """A ``vector``: each series' value at ``at_ns`` (for ``/query``)."""
    (vector,) = _vectors(query.expr, entries, [at_ns])
    return dict(sorted(vector.items()))
