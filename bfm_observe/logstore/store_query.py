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
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bfm_observe.logstore.logql import (
    Entry,
    JsonStage,
    LabelFilter,
    LabelFilterStage,
    LogQuery,
    OrAndLabelFilter,
    StringLabelFilter,
    required_words,
    select_streams,
)
from bfm_observe.logstore.logql_eval import LabelSet, label_set, run_pipeline
from bfm_observe.logstore.store_schema import (
    chunk_ids,
    chunk_of,
    decode_metadata,
    encodable,
    fts_table,
    part_of,
    trace_key,
)

MERGE_MAX_STREAMS = 64
"""Up to this many selected streams, a search without FTS may merge per-stream cursors."""
NARROW_SHARE = 8
"""A scan that must test lines (``instr``, or every line for ``entries``) reads per
stream only when at most 1/8 of the tenant's streams are selected: reading by stream costs
an index step and a table lookup a line, ~7 times a sequential scan by id (measured)."""
FTS_MAX_TRIGRAMS = 16
"""Trigrams per ``|=`` string in the FTS query (any subset is a correct prefilter)."""

Row = tuple[int, int, int, str, "str | None", "bytes | str | None"]
Rows = Generator[Row, None, None]
Bounded = Generator[tuple[int, "Row | None"], None, None]
# SQL text is built from constants and integers only (S608 below); values are bound.
_COLUMNS = "l.id, l.stream_id, l.ts_ns, l.line, l.metadata, l.trace_id"


@dataclass(frozen=True)
class Plan:
    """Which streams a query reads and how its lines are found."""

    query: LogQuery
    streams: Mapping[int, Mapping[str, str]]
    tenant_streams: int
    filter_streams: bool  # False when every stream in the store is selected
    trace: bytes | str | None
    fts_match: str | None
    contains: tuple[str, ...]
    excludes: tuple[str, ...]
    searches: tuple[str, ...]  # |~ patterns
    refuses: tuple[str, ...]  # !~ patterns

    @property
    def line_tests(self) -> bool:
        return bool(self.contains or self.excludes or self.searches or self.refuses)


def _conjuncts(expr: LabelFilter) -> Iterator[LabelFilter]:
    if isinstance(expr, OrAndLabelFilter) and expr.op == "and":
        yield from _conjuncts(expr.left)
        yield from _conjuncts(expr.right)
    else:
        yield expr


def trace_filter(query: LogQuery) -> str | None:
    """The ``trace_id`` every match carries as structured metadata, if the pipeline
    requires one before any ``| json`` (which could overwrite the label)."""
    for stage in query.stages:
        if isinstance(stage, JsonStage):
            return None
        if isinstance(stage, LabelFilterStage):
            for part in _conjuncts(stage.expr):
                if (
                    isinstance(part, StringLabelFilter)
                    and part.matcher.name == "trace_id"
                    and part.matcher.op == "="
                    and part.matcher.value
                    and encodable(part.matcher.value)
                ):
                    return part.matcher.value
    return None


def fts_match(words: Sequence[str]) -> str | None:
    """An FTS5 query every line containing all ``words`` matches, or None."""
    grams: dict[str, None] = {}
    for word in words:
        if len(word) < 3 or "\x00" in word or not encodable(word):
            continue
        mine = list(dict.fromkeys(word[i : i + 3] for i in range(len(word) - 2)))
        if len(mine) > FTS_MAX_TRIGRAMS:
            step = (len(mine) - 1) / (FTS_MAX_TRIGRAMS - 1)
            mine = [mine[round(i * step)] for i in range(FTS_MAX_TRIGRAMS)]
        grams.update(dict.fromkeys(mine))
    if not grams:
        return None
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


def make_plan(
    query: LogQuery, tenant_streams: Sequence[tuple[int, Mapping[str, str]]], total_streams: int
) -> Plan:
    streams = {sid: labels for sid, labels in tenant_streams if select_streams(query, labels)}
    trace = trace_filter(query)
    if trace is not None and any("trace_id" in labels for labels in streams.values()):
        trace = None  # the filter reads that stream label, not the metadata
    pushed = [f for f in query.line_filters if "\x00" not in f.value and encodable(f.value)]
    return Plan(
        query=query,
        streams=streams,
        tenant_streams=len(tenant_streams),
        filter_streams=len(streams) < total_streams,
        trace=None if trace is None else trace_key(trace),
        fts_match=fts_match(required_words(query)),
        contains=tuple(f.value for f in pushed if f.op == "|="),
        excludes=tuple(f.value for f in pushed if f.op == "!="),
        searches=tuple(f.value for f in pushed if f.op == "|~"),
        refuses=tuple(f.value for f in pushed if f.op == "!~"),
    )


def by_stream(plan: Plan, *, scan: bool) -> bool:
    """Whether to read stream by stream (in time order) rather than chunk by chunk; a
    ``scan`` reads on past most lines (line filters, or every line for ``entries``)."""
    if plan.fts_match is not None or len(plan.streams) > MERGE_MAX_STREAMS:
        return False
    return not scan or len(plan.streams) * NARROW_SHARE <= plan.tenant_streams


def _where(plan: Plan, start_ns: int, end_ns: int, *, streams: bool) -> tuple[str, list[Any]]:
    clauses = ["l.ts_ns >= ?", "l.ts_ns < ?"]
    params: list[Any] = [start_ns, end_ns]
    if streams and plan.filter_streams:
        clauses.append("l.stream_id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(sorted(plan.streams)))
    for word in plan.contains:
        clauses.append("instr(l.line, ?) > 0")
        params.append(word)
    for word in plan.excludes:
        clauses.append("instr(l.line, ?) = 0")
        params.append(word)
    for pattern in plan.searches:
        clauses.append("l.line REGEXP ?")
        params.append(pattern)
    for pattern in plan.refuses:
        clauses.append("NOT (l.line REGEXP ?)")
        params.append(pattern)
    return " AND ".join(clauses), params


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Rows:
    """Rows one at a time; the statement is finished when the generator is closed."""
    cursor = conn.execute(sql, params)
    try:
        yield from cursor
    finally:
        cursor.close()


def _trace_rows(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Rows:
    where, params = _where(plan, start_ns, end_ns, streams=True)
    sql = (
        f"SELECT {_COLUMNS} FROM lines AS l INDEXED BY lines_by_trace "  # noqa: S608
        f"WHERE l.trace_id = ? AND {where} ORDER BY l.ts_ns {'DESC' if backward else 'ASC'}"
    )
    return _rows(conn, sql, [plan.trace, *params])


def _stream_rows(
    conn: sqlite3.Connection, plan: Plan, stream_id: int, start_ns: int, end_ns: int, backward: bool
) -> Rows:
    where, params = _where(plan, start_ns, end_ns, streams=False)
    sql = (
        f"SELECT {_COLUMNS} FROM lines AS l INDEXED BY lines_by_stream "  # noqa: S608
        f"WHERE l.stream_id = ? AND {where} ORDER BY l.ts_ns {'DESC' if backward else 'ASC'}"
    )
    return _rows(conn, sql, [stream_id, *params])


def _range_rows(
    conn: sqlite3.Connection,
    plan: Plan,
    ids: tuple[int, int, int],
    start_ns: int,
    end_ns: int,
    backward: bool,
) -> Rows:
    """Lines with ids ``lo..hi`` (all in partition ``part`` when FTS is used), by id."""
    lo, hi, part = ids
    where, params = _where(plan, start_ns, end_ns, streams=True)
    order = "DESC" if backward else "ASC"
    if plan.fts_match is None:
        sql = (
            f"SELECT {_COLUMNS} FROM lines AS l NOT INDEXED "  # noqa: S608
            f"WHERE l.id BETWEEN ? AND ? AND {where} ORDER BY l.id {order}"
        )
        return _rows(conn, sql, [lo, hi, *params])
    fts = fts_table(part)
    sql = (
        f"SELECT {_COLUMNS} FROM {fts} CROSS JOIN lines AS l ON l.id = {fts}.rowid "  # noqa: S608
        f"WHERE {fts} MATCH ? AND {fts}.rowid BETWEEN ? AND ? AND {where} "
        f"ORDER BY {fts}.rowid {order}"
    )
    return _rows(conn, sql, [plan.fts_match, lo, hi, *params])


@dataclass(frozen=True)
class _Chunk:
    chunk: int
    min_ts_ns: int
    max_ts_ns: int
    ordered: bool


def _chunks(conn: sqlite3.Connection, start_ns: int, end_ns: int) -> list[_Chunk]:
    rows = conn.execute(
        "SELECT chunk, min_ts_ns, max_ts_ns, ordered FROM chunks "
        "WHERE max_ts_ns >= ? AND min_ts_ns < ?",
        (start_ns, end_ns),
    ).fetchall()
    return [_Chunk(c, lo, hi, bool(o)) for c, lo, hi, o in rows]


def _segments(chunks: Sequence[int], fts: bool) -> list[tuple[int, int, int]]:
    """Id ranges ``(lo, hi, part)`` covering ascending chunk numbers: consecutive chunks
    share a range, which FTS splits at partition boundaries."""
    out: list[tuple[int, int, int]] = []
    for chunk in chunks:
        lo, hi = chunk_ids(chunk)
        if out and out[-1][1] + 1 == lo and not (fts and out[-1][2] != part_of(chunk)):
            out[-1] = (out[-1][0], hi, out[-1][2])
        else:
            out.append((lo, hi, part_of(chunk)))
    return out


def _chunked(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Bounded:
    """``(bound, row)``: rows by id, chunk by chunk in order of their newest (oldest)
    line, each with a bound on the timestamps of everything after it; ``row`` is None
    before each run of consecutive chunks."""
    chunks = _chunks(conn, start_ns, end_ns)
    if backward:
        chunks.sort(key=lambda c: (-c.max_ts_ns, -c.chunk))
    else:
        chunks.sort(key=lambda c: (c.min_ts_ns, c.chunk))
    edges = [c.max_ts_ns if backward else c.min_ts_ns for c in chunks]
    # runs: consecutive chunk numbers visited one after the other, read by one query
    runs: list[list[int]] = []
    for pos, chunk in enumerate(chunks):
        step = -1 if backward else 1
        if runs and chunks[runs[-1][-1]].chunk + step == chunk.chunk:
            runs[-1].append(pos)
        else:
            runs.append([pos])
    # a chunk's bound clipped to the range, then widened by the next chunk's
    edges = [min(e, end_ns - 1) if backward else max(e, start_ns) for e in edges]
    nexts = [*edges[1:], start_ns if backward else end_ns - 1]
    position = {c.chunk: pos for pos, c in enumerate(chunks)}
    for run in runs:
        yield edges[run[0]], None
        numbers = sorted(chunks[pos].chunk for pos in run)
        segments = _segments(numbers, plan.fts_match is not None)
        for ids in reversed(segments) if backward else segments:
            rows = _range_rows(conn, plan, ids, start_ns, end_ns, backward)
            try:
                for row in rows:
                    pos = position[chunk_of(row[0])]
                    own = row[2] if chunks[pos].ordered else edges[pos]
                    yield (max(own, nexts[pos]) if backward else min(own, nexts[pos])), row
            finally:
                rows.close()


def _ordered(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Bounded:
    if plan.trace is not None:
        rows = _trace_rows(conn, plan, start_ns, end_ns, backward)
        try:
            for row in rows:
                yield row[2], row
        finally:
            rows.close()
        return
    streams = [_stream_rows(conn, plan, sid, start_ns, end_ns, backward) for sid in plan.streams]
    try:
        for row in heapq.merge(*streams, key=lambda r: r[2], reverse=backward):
            yield row[2], row
    finally:
        for rows in streams:
            rows.close()


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
    source = (_ordered if ordered else _chunked)(conn, plan, start_ns, end_ns, backward)
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
        sources = [_trace_rows(conn, plan, start_ns, end_ns, False)]
    elif by_stream(plan, scan=True):
        sources = [_stream_rows(conn, plan, s, start_ns, end_ns, False) for s in plan.streams]
    else:
        numbers = sorted(c.chunk for c in _chunks(conn, start_ns, end_ns))
        segments = _segments(numbers, plan.fts_match is not None)
        sources = [_range_rows(conn, plan, ids, start_ns, end_ns, False) for ids in segments]
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
