"""Retention of the log store: by age and by a disk budget, oldest first, chunk by chunk.

By age, lines with ``ts_ns`` and spans with ``end_ns`` before ``now - retention_s`` go.
By budget, when the files (database and WAL) or the live pages exceed ``max_disk_bytes``,
the oldest lines and spans go, one step at a time (the oldest chunk, or the oldest
``SPAN_STEP`` spans, whichever ends first, and everything older), until the live pages
are at most ``DISK_TARGET`` of the budget. So nothing newer than a kept line or span is
ever deleted. Each step is its own transaction, so pushes go on in between; a full-text
partition goes (``DROP TABLE``) with its last chunk; ``PRAGMA incremental_vacuum`` and a
WAL checkpoint then hand the freed pages back to the file system (no ``VACUUM``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from pathlib import Path

from bfm_observe.logstore.store_schema import chunk_ids, fts_parts, fts_table, part_of

DISK_TARGET = 0.9
"""Budget retention deletes until the live pages are at most this share of the budget."""
SPAN_STEP = 16_384
AGE_STEP_CHUNKS = 4
"""Chunks per transaction when deleting by age (keeps the write lock short)."""

Write = Callable[[str, bool], AbstractContextManager[sqlite3.Connection]]
"""``write(action, transaction)``: the write connection under the write lock, inside
``BEGIN IMMEDIATE``/``COMMIT`` when ``transaction``; errors become store errors."""


@dataclass(frozen=True)
class RetentionResult:
    """What one :meth:`LogStore.enforce_retention` did."""

    lines_deleted: int
    spans_deleted: int
    bytes_before: int  # database and WAL files
    bytes_after: int
    reason: str  # "none", "age", "disk" or "age+disk"


def disk_bytes(path: Path) -> int:
    """Bytes of the database file and its WAL."""
    total = 0
    for file in (path, path.with_name(path.name + "-wal")):
        with suppress(FileNotFoundError):
            total += file.stat().st_size
    return total


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the pages in use (as this connection sees them, uncommitted work included)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


def delete_lines_before(conn: sqlite3.Connection, cutoff_ns: int, max_chunks: int = -1) -> int:
    """Delete lines with ``ts_ns < cutoff_ns`` from at most ``max_chunks`` chunks (-1: all)
    and fix those chunks' bounds; returns the lines deleted."""
    chunks = conn.execute(
        "SELECT chunk, max_ts_ns FROM chunks WHERE min_ts_ns < ? ORDER BY min_ts_ns LIMIT ?",
        (cutoff_ns, max_chunks),
    ).fetchall()
    deleted = 0
    for chunk, max_ts_ns in chunks:
        lo, hi = chunk_ids(chunk)
        if max_ts_ns < cutoff_ns:
            deleted += conn.execute("DELETE FROM lines WHERE id BETWEEN ? AND ?", (lo, hi)).rowcount
            conn.execute("DELETE FROM chunks WHERE chunk = ?", (chunk,))
            continue
        deleted += conn.execute(
            "DELETE FROM lines WHERE id BETWEEN ? AND ? AND ts_ns < ?", (lo, hi, cutoff_ns)
        ).rowcount
        count, min_ts_ns = conn.execute(
            "SELECT count(*), min(ts_ns) FROM lines WHERE id BETWEEN ? AND ?", (lo, hi)
        ).fetchone()
        if count:
            conn.execute(
                "UPDATE chunks SET lines = ?, min_ts_ns = ? WHERE chunk = ?",
                (count, min_ts_ns, chunk),
            )
        else:
            conn.execute("DELETE FROM chunks WHERE chunk = ?", (chunk,))
    return deleted


def delete_spans_before(conn: sqlite3.Connection, cutoff_ns: int, max_spans: int = -1) -> int:
    return int(
        conn.execute(
            "DELETE FROM spans WHERE id IN (SELECT id FROM spans INDEXED BY spans_by_end "
            "WHERE end_ns < ? ORDER BY end_ns LIMIT ?)",
            (cutoff_ns, max_spans),
        ).rowcount
    )


def drop_empty_parts(conn: sqlite3.Connection) -> None:
    """Drop the full-text partitions that no chunk uses any more."""
    live = {part_of(chunk) for (chunk,) in conn.execute("SELECT chunk FROM chunks")}
    for part in sorted(fts_parts(conn) - live):
        conn.execute(f"DROP TABLE {fts_table(part)}")


def _next_cutoff_ns(conn: sqlite3.Connection) -> int | None:
    """End of the next budget step: after the oldest chunk, or the oldest spans."""
    cutoffs: list[int] = []
    (oldest_chunk_ns,) = conn.execute("SELECT min(max_ts_ns) FROM chunks").fetchone()
    if oldest_chunk_ns is not None:
        cutoffs.append(oldest_chunk_ns + 1)
    row = conn.execute(
        "SELECT end_ns FROM spans INDEXED BY spans_by_end ORDER BY end_ns LIMIT 1 OFFSET ?",
        (SPAN_STEP - 1,),
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT max(end_ns) FROM spans").fetchone()
    if row[0] is not None:
        cutoffs.append(row[0] + 1)
    return min(cutoffs) if cutoffs else None


def enforce(write: Write, path: Path, *, cutoff_ns: int, max_disk_bytes: int) -> RetentionResult:
    """Delete by age (before ``cutoff_ns``), then by the disk budget."""
    before = disk_bytes(path)
    lines = spans = 0
    reasons: list[str] = []
    while True:
        with write("deleting lines past the retention age", True) as conn:
            step_lines = delete_lines_before(conn, cutoff_ns, AGE_STEP_CHUNKS)
            step_spans = delete_spans_before(conn, cutoff_ns, SPAN_STEP)
            drop_empty_parts(conn)
        lines, spans = lines + step_lines, spans + step_spans
        if not (step_lines or step_spans):
            break
    if lines or spans:
        reasons.append("age")
    with write("measuring the disk use", True) as conn:
        over = live_bytes(conn) > max_disk_bytes or before > max_disk_bytes
    target = DISK_TARGET * max_disk_bytes
    while over:
        with write("deleting the oldest lines for the disk budget", True) as conn:
            cutoff = _next_cutoff_ns(conn)
            if cutoff is None:
                break
            step_lines = delete_lines_before(conn, cutoff)
            step_spans = delete_spans_before(conn, cutoff)
            drop_empty_parts(conn)
            over = live_bytes(conn) > target
        lines, spans = lines + step_lines, spans + step_spans
        if not (step_lines or step_spans):
            break
        if "disk" not in reasons:
            reasons.append("disk")
    with write("returning free pages to the file system", False) as conn:
        # one step frees one page: executescript steps the pragma to its end
        conn.executescript("PRAGMA incremental_vacuum")
    with write("checkpointing the WAL", False) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return RetentionResult(
        lines_deleted=lines,
        spans_deleted=spans,
        bytes_before=before,
        bytes_after=disk_bytes(path),
        reason="+".join(reasons) or "none",
    )
