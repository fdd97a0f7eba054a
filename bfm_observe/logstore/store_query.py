"""How the log store finds lines for a query: the plan and the early-stopping search.

A plan picks the streams (the selector, evaluated once per stream) and one access path:

- ``| trace_id="..."`` at the top level of the pipeline, before any ``| json``: the
  ``(trace_id, ts_ns)`` index, read in time order;
- a ``|=`` string of 3 or more characters: the trigram FTS5 partitions, read by line id
  over the chunks that overlap the time range;
- otherwise, for up to ``MERGE_MAX_STREAMS`` streams (and, when most lines will be read
  and tested, only for a narrow selection: ``NARROW_SHARE``): each stream's
  ``(stream_id, ts_ns)`` index in time order, merged; else the chunks, by line id.

Line filters are also checked in SQL (``instr`` for ``|=`` and ``!=``, a Python
``REGEXP`` function for ``|~`` and ``!~``: ~5 times faster than building each entry
first), but every candidate still goes through :func:`run_pipeline` exactly as
:func:`eval_log` runs it, so the indexes only ever narrow.

A newest-first search stops once it holds ``limit`` matches and nothing left to read
can be as new as the ``limit``-th: in time-ordered paths that is the next row's
timestamp; in id-ordered paths it is the current chunk's ``max_ts_ns`` (or the row's own
timestamp when the chunk's timestamps rise with its ids), chunks being visited by
``max_ts_ns`` descending. Oldest-first is the mirror image.

The plan is made in :mod:`~bfm_observe.logstore.store_plan`, the rows are read in
:mod:`~bfm_observe.logstore.store_scan`.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator, Mapping, Sequence

from bfm_observe.logstore.logql import Entry
from bfm_observe.logstore.logql_eval import LabelSet, label_set, run_pipeline
from bfm_observe.logstore.store_lines import decode_metadata
from bfm_observe.logstore.store_plan import Plan
from bfm_observe.logstore.store_scan import (
    Row,
    Rows,
    chunked_rows,
    chunks_between,
    ordered_rows,
    range_rows,
    segments_of,
    stream_rows,
    trace_rows,
)

MERGE_MAX_STREAMS = 64
"""Up to this many selected streams, a search without FTS may merge per-stream cursors."""
NARROW_SHARE = 8
"""A scan that must test lines (``instr``, or every line for ``entries``) reads per
stream only when at most 1/8 of the tenant's streams are selected: reading by stream costs
an index step and a table lookup a line, ~7 times a sequential scan by id (measured)."""


def by_stream(plan: Plan, *, scan: bool) -> bool:
    """Whether to read stream by stream (in time order) rather than chunk by chunk; a
    ``scan`` reads on past most lines (line filters, or every line for ``entries``)."""
    if plan.fts_match is not None or len(plan.streams) > MERGE_MAX_STREAMS:
        return False
    return not scan or len(plan.streams) * NARROW_SHARE <= plan.tenant_streams


class _Top:
    """The ``limit`` best matches so far, sorted at the end exactly as eval_log sorts."""

    def __init__(self, plan: Plan, limit: int, backward: bool) -> None:
        self.plan, self.limit, self.backward = plan, limit, backward
        self.keys: list[int] = []  # heap of the limit best timestamps (negated forward)
        self.found: list[tuple[int, LabelSet, Entry]] = []

    def done(self, bound_ns: int) -> bool:
        """Nothing at or beyond ``bound_ns`` can enter the top any more."""
        if len(self.keys) < self.limit:
            return False
        return (bound_ns if self.backward else -bound_ns) < self.keys[0]

    def offer(self, row: Row) -> None:
        line_id, stream_id, ts_ns, line, metadata, trace = row
        key = ts_ns if self.backward else -ts_ns
        if len(self.keys) >= self.limit and key < self.keys[0]:
            return
        entry = Entry(ts_ns, line, self.plan.streams[stream_id], decode_metadata(metadata, trace))
        labels = run_pipeline(self.plan.query, entry)
        if labels is None:
            return
        self.found.append((line_id, label_set(labels), entry))
        if len(self.keys) < self.limit:
            heapq.heappush(self.keys, key)
        else:
            heapq.heappushpop(self.keys, key)

    def result(self) -> list[tuple[LabelSet, Entry]]:
        self.found.sort(key=lambda item: item[0])  # ingest order breaks ties, as in eval_log
        items = [(labels, entry) for _, labels, entry in self.found]
        items.sort(key=lambda item: (item[1].ts_ns, item[0], item[1].line), reverse=self.backward)
        return items[: self.limit]


def select(
    conn: sqlite3.Connection, plan: Plan, *, start_ns: int, end_ns: int, limit: int, backward: bool
) -> list[tuple[LabelSet, Entry]]:
    """:func:`eval_log` over the plan's streams' lines in ``[start_ns, end_ns)``, taken
    in ingest order, without reading more than it must."""
    if not plan.streams or end_ns <= start_ns:
        return []
    ordered = plan.trace is not None or by_stream(plan, scan=plan.line_tests)
    source = (ordered_rows if ordered else chunked_rows)(conn, plan, start_ns, end_ns, backward)
    top = _Top(plan, limit, backward)
    try:
        for bound_ns, row in source:
            if top.done(bound_ns):
                break
            if row is not None:
                top.offer(row)
    finally:
        source.close()
    return top.result()


def candidates(
    conn: sqlite3.Connection, plan: Plan, *, start_ns: int, end_ns: int
) -> Iterator[Entry]:
    """Every line of the plan's streams in ``[start_ns, end_ns)`` that the indexes cannot
    rule out (a superset of the pipeline's matches), in no particular order."""
    if not plan.streams or end_ns <= start_ns:
        return
    sources: list[Rows]
    if plan.trace is not None:
        sources = [trace_rows(conn, plan, start_ns, end_ns, False)]
    elif by_stream(plan, scan=True):
        sources = [stream_rows(conn, plan, s, start_ns, end_ns, False) for s in plan.streams]
    else:
        numbers = sorted(c.chunk for c in chunks_between(conn, start_ns, end_ns))
        segments = segments_of(numbers, plan.fts_match is not None)
        sources = [range_rows(conn, plan, ids, start_ns, end_ns, False) for ids in segments]
    streams = plan.streams
    for rows in sources:
        try:
            for _, stream_id, ts_ns, line, metadata, trace in rows:
                yield Entry(ts_ns, line, streams[stream_id], decode_metadata(metadata, trace))
        finally:
            rows.close()


def streams_with_lines(
    conn: sqlite3.Connection,
    streams: Sequence[tuple[int, Mapping[str, str]]],
    *,
    start_ns: int,
    end_ns: int,
) -> list[Mapping[str, str]]:
    """The labels of those streams that have a line in ``[start_ns, end_ns)``."""
    sql = (
        "SELECT 1 FROM lines INDEXED BY lines_by_stream "
        "WHERE stream_id = ? AND ts_ns >= ? AND ts_ns < ? LIMIT 1"
    )
    return [
        labels
        for stream_id, labels in streams
        if conn.execute(sql, (stream_id, start_ns, end_ns)).fetchone() is not None
    ]
