"""The log store's spans: the row codec of the ``spans`` table, writing and reading a trace.

A span is keyed by (tenant, trace id, span id): one pushed again replaces the stored one.
Its indexed fields are columns; attributes, resource, events and links are JSON (``rest``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from bfm_observe.logstore.records import SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.store_lines import check_ts_ns


def span_row(span: SpanRecord) -> tuple[Any, ...]:
    """The ``spans`` row of a span; ValueError naming what is wrong."""
    for name in ("tenant", "trace_id", "span_id"):
        value = getattr(span, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"a span needs a non-empty string {name}, not {value!r}")
    for name in ("parent_span_id", "name", "kind", "service", "status", "status_message"):
        if not isinstance(getattr(span, name), str):
            raise ValueError(f"span {span.span_id}: {name} must be a string")
    check_ts_ns(span.start_ns, "span start_ns")
    check_ts_ns(span.end_ns, "span end_ns")
    rest = {
        "attributes": dict(span.attributes),
        "resource": dict(span.resource),
        "events": [[e.ts_ns, e.name, dict(e.attributes)] for e in span.events],
        "links": [[k.trace_id, k.span_id, dict(k.attributes)] for k in span.links],
    }
    return (
        span.tenant,
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.start_ns,
        span.end_ns,
        span.service,
        span.status,
        span.status_message,
        json.dumps(rest, separators=(",", ":"), ensure_ascii=False),
    )


SPAN_COLUMNS = (
    "tenant, trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, service, "
    "status, status_message, rest"
)


def span_of_row(row: tuple[Any, ...]) -> SpanRecord:
    """The span of a row selected as ``SPAN_COLUMNS``."""
    rest = json.loads(row[11])
    return SpanRecord(
        tenant=row[0],
        trace_id=row[1],
        span_id=row[2],
        parent_span_id=row[3],
        name=row[4],
        kind=row[5],
        start_ns=row[6],
        end_ns=row[7],
        service=row[8],
        status=row[9],
        status_message=row[10],
        attributes=rest["attributes"],
        resource=rest["resource"],
        events=tuple(SpanEvent(ts, name, attrs) for ts, name, attrs in rest["events"]),
        links=tuple(SpanLink(trace, span, attrs) for trace, span, attrs in rest["links"]),
    )


def insert_spans(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Store rows of :func:`span_row`, replacing spans with the same key."""
    conn.executemany(
        f"INSERT OR REPLACE INTO spans ({SPAN_COLUMNS}) "  # noqa: S608
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def fetch_trace(conn: sqlite3.Connection, tenant: str, trace_id: str) -> list[tuple[Any, ...]]:
    """The stored rows of one trace, in no particular order."""
    rows: list[tuple[Any, ...]] = conn.execute(
        f"SELECT {SPAN_COLUMNS} FROM spans WHERE tenant = ? AND trace_id = ?",  # noqa: S608
        (tenant, trace_id),
    ).fetchall()
    return rows


def spans_by_start(rows: Sequence[tuple[Any, ...]]) -> list[SpanRecord]:
    """The spans of rows, by start time (then end time and span id)."""
    spans = [span_of_row(row) for row in rows]
    spans.sort(key=lambda s: (s.start_ns, s.end_ns, s.span_id))
    return spans
