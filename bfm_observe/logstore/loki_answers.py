"""Loki's query answers as plain values, parsed from the documented JSON shapes (pure).

``streams`` results come in three forms, all read here: Loki's default encoding (structured
metadata and parsed labels merged into the stream labels, ``[ns, line]`` values), values
with a plain ``{metadata}`` third element (as pushes carry them), and the
``categorize-labels`` encoding (``[ns, line, {"structuredMetadata": {}, "parsed": {}}]``
with ``data.encodingFlags``). ``matrix``/``vector`` samples are ``[seconds, "value"]``.
Shapes no Loki answers raise ``ValueError`` naming the part.
See https://grafana.com/docs/loki/latest/reference/loki-http-api/#query-logs-within-a-range-of-time
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

CATEGORIZE_LABELS = "categorize-labels"


@dataclass(frozen=True)
class LogLine:
    """One entry of a ``streams`` result."""

    labels: Mapping[str, str]  # the stream's labels (all of them in Loki's default encoding)
    ts_ns: int
    line: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # structured metadata
    parsed: Mapping[str, str] = field(default_factory=dict)  # labels a parser stage extracted

    def value_of(self, name: str) -> str:
        """``name`` from the metadata, else the parsed labels, else the stream labels, or ""."""
        return self.metadata.get(name) or self.parsed.get(name) or self.labels.get(name, "")


@dataclass(frozen=True)
class Series:
    """One series of a ``matrix`` (many points) or ``vector`` (one point) result."""

    metric: Mapping[str, str]
    points: tuple[tuple[int, float], ...]  # (ts_ns, value)


@dataclass(frozen=True)
class QueryResult:
    """``result_type`` is "streams", "matrix", "vector" or "scalar"; ``lines`` come in the
    requested direction (newest first for "backward"), merged across streams."""

    result_type: str
    lines: tuple[LogLine, ...] = ()
    series: tuple[Series, ...] = ()


def parse_query_data(data: Any, *, newest_first: bool) -> QueryResult:
    """The ``data`` object of a ``query`` or ``query_range`` answer."""
    if not isinstance(data, dict):
        raise ValueError("data is not an object")
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return QueryResult("scalar", series=(Series({}, (_point(result),)),))
    if not isinstance(result, list):
        raise ValueError("data.result is not a list")
    if result_type == "streams":
        flags = data.get("encodingFlags") or ()
        lines = _stream_lines(result, categorized=CATEGORIZE_LABELS in flags)
        lines.sort(key=lambda entry: entry.ts_ns, reverse=newest_first)
        return QueryResult("streams", lines=tuple(lines))
    if result_type in ("matrix", "vector"):
        return QueryResult(result_type, series=tuple(_series(item) for item in result))
    raise ValueError(f"unknown resultType {result_type!r}")


def parse_str_list(data: Any) -> list[str]:
    """``labels`` and ``label/<name>/values`` data; Loki leaves it out when nothing matched."""
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ValueError("data is not a list of strings")
    return list(data)


def parse_label_sets(data: Any) -> list[dict[str, str]]:
    """``series`` data: a list of label sets."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError("data is not a list of label sets")
    return [str_map(item) for item in data]


def str_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"labels are not a map of strings: {value!r}")
    return {str(k): v for k, v in value.items()}


def _stream_lines(result: list[Any], *, categorized: bool) -> list[LogLine]:
    lines: list[LogLine] = []
    for stream in result:
        if not isinstance(stream, dict) or not isinstance(stream.get("values"), list):
            raise ValueError("a stream has no values list")
        labels = str_map(stream.get("stream"))
        for value in stream["values"]:
            if not isinstance(value, list) or len(value) not in (2, 3):
                raise ValueError(f"a value is not [ns, line] or [ns, line, {{}}]: {value!r}")
            ts, line = value[0], value[1]
            if not (isinstance(ts, str) and ts.isdigit() and isinstance(line, str)):
                raise ValueError(f"a value's time or line is not a string: {value!r}")
            third = value[2] if len(value) == 3 else None
            metadata, parsed = _third_element(third, categorized=categorized)
            lines.append(LogLine(labels, int(ts), line, metadata, parsed))
    return lines


def _third_element(value: Any, *, categorized: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(structured metadata, parsed labels) of a value's optional third element."""
    if value is None:
        return {}, {}
    if not isinstance(value, dict):
        raise ValueError(f"a value's third element is not an object: {value!r}")
    # A plain map of metadata has string values only, so object values also tell the
    # categorized form when a server left encodingFlags out.
    if categorized or any(isinstance(v, dict) for v in value.values()):
        return str_map(value.get("structuredMetadata")), str_map(value.get("parsed"))
    return str_map(value), {}


def _point(value: Any) -> tuple[int, float]:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
        try:
            return int(Decimal(str(value[0])) * 1_000_000_000), float(value[1])
        except (InvalidOperation, ValueError):
            pass
    raise ValueError(f'a sample is not [seconds, "value"]: {value!r}')


def _series(item: Any) -> Series:
    if not isinstance(item, dict):
        raise ValueError("a series is not an object")
    metric = str_map(item.get("metric"))
    if "values" in item:
        if not isinstance(item["values"], list):
            raise ValueError("a series' values is not a list")
        return Series(metric, tuple(_point(v) for v in item["values"]))
    return Series(metric, (_point(item.get("value")),))
