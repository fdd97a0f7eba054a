"""Builders shared by the log store's tests: parsed LogQL of a known kind, and spans."""

from __future__ import annotations

from typing import Any

from bfm_observe.logstore.logql import LogQuery, MetricQuery, parse
from bfm_observe.logstore.records import SpanRecord


def log_query(text: str) -> LogQuery:
    query = parse(text)
    assert isinstance(query, LogQuery)
    return query


def metric_query(text: str) -> MetricQuery:
    query = parse(text)
    assert isinstance(query, MetricQuery)
    return query


def span_record(
    trace_id: str,
    span_id: str,
    *,
    start_ns: int,
    end_ns: int,
    name: str,
    service: str,
    site: str,
    **more: Any,
) -> SpanRecord:
    """A root span of ``service`` at ``site`` (resource ``bfm.site`` and ``service.name``)."""
    return SpanRecord(
        tenant="fake",
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id="",
        name=name,
        kind="internal",
        start_ns=start_ns,
        end_ns=end_ns,
        service=service,
        resource={"bfm.site": site, "service.name": service},
        **more,
    )
