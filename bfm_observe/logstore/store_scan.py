"""How the log store reads a plan's lines: SQL row sources by trace, stream and chunk.

Rows come by the ``(trace_id, ts_ns)`` index or each stream's ``(stream_id, ts_ns)``
index in time order, streams merged (:func:`ordered_rows`), or chunk by chunk by line id,
through the FTS5 partitions when the plan has a trigram query (:func:`chunked_rows`). Each
row comes with a bound on the timestamps of everything read after it, which lets a search
stop early (see :mod:`~bfm_observe.logstore.store_query`).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from bfm_observe.logstore.store_plan import Plan
from bfm_observe.logstore.store_schema import chunk_ids, chunk_of, fts_table, part_of

Row = tuple[int, int, int, str, "str | None", "bytes | str | None"]
Rows = Generator[Row, None, None]
Bounded = Generator[tuple[int, "Row | None"], None, None]
# SQL text is built from constants and integers only (S608 below); values are bound.
_COLUMNS = "l.id, l.stream_id, l.ts_ns, l.line, l.metadata, l.trace_id"


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


def trace_rows(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Rows:
    where, params = _where(plan, start_ns, end_ns, streams=True)
    sql = (
        f"SELECT {_COLUMNS} FROM lines AS l INDEXED BY lines_by_trace "  # noqa: S608
        f"WHERE l.trace_id = ? AND {where} ORDER BY l.ts_ns {'DESC' if backward else 'ASC'}"
    )
    return _rows(conn, sql, [plan.trace, *params])


def stream_rows(
    conn: sqlite3.Connection, plan: Plan, stream_id: int, start_ns: int, end_ns: int, backward: bool
) -> Rows:
    where, params = _where(plan, start_ns, end_ns, streams=False)
    sql = (
        f"SELECT {_COLUMNS} FROM lines AS l INDEXED BY lines_by_stream "  # noqa: S608
        f"WHERE l.stream_id = ? AND {where} ORDER BY l.ts_ns {'DESC' if backward else 'ASC'}"
    )
    return _rows(conn, sql, [stream_id, *params])


def range_rows(
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
class Chunk:
    """A row of ``chunks``: a chunk's time bounds and whether its times rise with its ids."""

    chunk: int
    min_ts_ns: int
    max_ts_ns: int
    ordered: bool


def chunks_between(conn: sqlite3.Connection, start_ns: int, end_ns: int) -> list[Chunk]:
    """The chunks whose time bounds overlap ``[start_ns, end_ns)``."""
    rows = conn.execute(
        "SELECT chunk, min_ts_ns, max_ts_ns, ordered FROM chunks "
        "WHERE max_ts_ns >= ? AND min_ts_ns < ?",
        (start_ns, end_ns),
    ).fetchall()
    return [Chunk(c, lo, hi, bool(o)) for c, lo, hi, o in rows]


def segments_of(chunks: Sequence[int], fts: bool) -> list[tuple[int, int, int]]:
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


def chunked_rows(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Bounded:
    """``(bound, row)``: rows by id, chunk by chunk in order of their newest (oldest)
    line, each with a bound on the timestamps of everything after it; ``row`` is None
    before each run of consecutive chunks."""
    chunks = chunks_between(conn, start_ns, end_ns)
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
        segments = segments_of(numbers, plan.fts_match is not None)
        for ids in reversed(segments) if backward else segments:
            rows = range_rows(conn, plan, ids, start_ns, end_ns, backward)
            try:
                for row in rows:
                    pos = position[chunk_of(row[0])]
                    own = row[2] if chunks[pos].ordered else edges[pos]
                    yield (max(own, nexts[pos]) if backward else min(own, nexts[pos])), row
            finally:
                rows.close()


def ordered_rows(
    conn: sqlite3.Connection, plan: Plan, start_ns: int, end_ns: int, backward: bool
) -> Bounded:
    """``(bound, row)``: rows in time order, by the trace index or the streams' indexes
    merged; each row's own timestamp is its bound."""
    if plan.trace is not None:
        rows = trace_rows(conn, plan, start_ns, end_ns, backward)
        try:
            for row in rows:
                yield row[2], row
        finally:
            rows.close()
        return
    streams = [stream_rows(conn, plan, sid, start_ns, end_ns, backward) for sid in plan.streams]
    try:
        for row in heapq.merge(*streams, key=lambda r: r[2], reverse=backward):
            yield row[2], row
    finally:
        for rows in streams:
            rows.close()
