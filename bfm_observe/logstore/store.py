"""The embedded log store: log lines and spans in one SQLite file, searched with LogQL.

:meth:`LogStore.select` answers exactly what :func:`~bfm_observe.logstore.logql_eval.eval_log`
answers over all of a tenant's lines in ``[start_ns, end_ns)`` taken in ingest order (ties
in time, label set and text keep that order); :meth:`LogStore.entries` hands metric
queries a superset of their matching lines for ``eval_metric``, and
:meth:`LogStore.count_metric` answers those without a pipeline by counting in SQL
(:mod:`~bfm_observe.logstore.store_counts`). How lines are found is in
:mod:`~bfm_observe.logstore.store_query`, the file's layout and the choice of tokenizer in
:mod:`~bfm_observe.logstore.store_schema`, how lines and spans are written in
:mod:`~bfm_observe.logstore.store_lines` and :mod:`~bfm_observe.logstore.store_spans`,
retention in :mod:`~bfm_observe.logstore.retention`.

Tenants are separate: every query names one and sees only its streams and spans.
Lines are not deduplicated (Loki drops a line identical in stream, time and text to the
one before it; here both are kept). Spans are keyed by (tenant, trace id, span id): a span
pushed again replaces the stored one.

Thread safety: any method may be called from any thread. Writes (push, push_spans,
retention) go through one connection under a lock, one transaction each (retention: one
per step). Reads take a connection from a small pool (one per concurrent reader, opened on
demand) and run in one read transaction, so WAL mode lets them see a consistent snapshot
while a push goes on. One ``LogStore`` per file per process: the stream catalogue lives in
memory. :meth:`LogStore.entries` holds its reader until the iterator is exhausted or
closed, so consume it promptly.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from bfm_observe.logstore import retention, store_counts, store_query, store_spans
from bfm_observe.logstore.logql import LogQuery, MetricQuery, log_query_of, select_streams
from bfm_observe.logstore.logql_ast import Entry
from bfm_observe.logstore.logql_eval import LabelSet
from bfm_observe.logstore.records import LogRecord, SpanRecord
from bfm_observe.logstore.retention import RetentionResult
from bfm_observe.logstore.store_lines import check_ts_ns, insert_lines, prepare_lines
from bfm_observe.logstore.store_plan import Plan, make_plan
from bfm_observe.logstore.store_schema import (
    LogStoreError,
    StoreFull,
    StreamCatalogue,
    connect,
    db_error,
    open_error,
)

__all__ = ["LogStore", "LogStoreError", "RetentionResult", "StoreFull", "StoreStats"]

MAX_IDLE_READERS = 8


@dataclass(frozen=True)
class StoreStats:
    """What the store holds: counts, the files' bytes (database and WAL), time span."""

    lines: int
    spans: int
    streams: int  # every stream ever pushed to, including those retention emptied
    disk_bytes: int
    oldest_ts_ns: int | None
    newest_ts_ns: int | None


class LogStore:
    """Log lines and spans of all tenants in one SQLite file (created when missing)."""

    def __init__(
        self,
        path: Path | str,
        *,
        retention_s: float = 7 * 86400,
        max_disk_bytes: int = 20 * 1024**3,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not retention_s > 0:
            raise ValueError(f"retention_s must be positive, not {retention_s!r}")
        if not max_disk_bytes > 0:
            raise ValueError(f"max_disk_bytes must be positive, not {max_disk_bytes!r}")
        self.path = Path(path)
        self.retention_s = retention_s
        self.max_disk_bytes = max_disk_bytes
        self._wall_clock = wall_clock
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: list[sqlite3.Connection] = []
        self._closed = False
        self._catalogue = StreamCatalogue()
        self._writer = connect(self.path, writer=True)
        try:
            self._reload()
        except sqlite3.Error as exc:
            self._writer.close()
            raise open_error(self.path, exc) from None

    def _reload(self) -> None:
        """Reread what the writer keeps in memory (at open and after a failed write)."""
        self._catalogue.load(self._writer)
        (self._next_line_id,) = self._writer.execute(
            "SELECT value FROM meta WHERE key = 'next_line_id'"
        ).fetchone()

    # --- connections ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogStoreError(f"log store {self.path} is closed")

    @contextmanager
    def _write(self, action: str, transaction: bool = True) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._check_open()
            conn = self._writer
            try:
                if transaction:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                if transaction:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                with suppress(sqlite3.Error):
                    self._reload()
                if isinstance(exc, sqlite3.Error):
                    raise db_error(self.path, exc, action) from None
                raise

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            self._check_open()
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = connect(self.path, writer=False)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT value FROM meta LIMIT 1").fetchone()  # pins the snapshot
            yield conn
        except sqlite3.Error as exc:
            raise db_error(self.path, exc, action) from None
        finally:
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("COMMIT")
            with self._pool_lock:
                if self._closed or len(self._pool) >= MAX_IDLE_READERS:
                    conn.close()
                else:
                    self._pool.append(conn)

    # --- writing --------------------------------------------------------------------------

    def push(self, records: Sequence[LogRecord]) -> int:
        """Store log lines in one transaction; returns how many. ValueError (nothing
        stored) for a bad record, StoreFull when the disk is full."""
        prepared = prepare_lines(records)
        if not prepared:
            return 0
        with self._write("storing log lines") as conn:
            first_id = self._next_line_id
            insert_lines(conn, self._catalogue, first_id, prepared)
            self._next_line_id = first_id + len(prepared)
            conn.execute(  # keys_next_line_id: the metadata names are in stream_keys
                "UPDATE meta SET value = ? WHERE key IN ('next_line_id', 'keys_next_line_id')",
                (self._next_line_id,),
            )
        return len(prepared)

    def push_spans(self, spans: Sequence[SpanRecord]) -> int:
        """Store finished spans in one transaction (a span already stored under the same
        tenant, trace id and span id is replaced); returns how many."""
        rows = [store_spans.span_row(span) for span in spans]
        if not rows:
            return 0
        try:
            with self._write("storing spans") as conn:
                store_spans.insert_spans(conn, rows)
        except UnicodeEncodeError as exc:
            raise ValueError(f"a span has text that is not valid Unicode ({exc})") from None
        return len(rows)

    # --- reading --------------------------------------------------------------------------

    def _plan(self, tenant: str, query: LogQuery | MetricQuery) -> Plan:
        """Called inside a read transaction, so every stream its lines can show is known."""
        return make_plan(
            log_query_of(query), self._catalogue.of_tenant(tenant), self._catalogue.count()
        )

    @staticmethod
    def _check_range(start_ns: int, end_ns: int) -> None:
        check_ts_ns(start_ns, "start_ns")
        check_ts_ns(end_ns, "end_ns")
        if end_ns < start_ns:
            raise ValueError(f"end_ns {end_ns} is before start_ns {start_ns}")

    def select(
        self,
        tenant: str,
        query: LogQuery,
        *,
        start_ns: int,
        end_ns: int,
        limit: int,
        direction: Literal["backward", "forward"] = "backward",
    ) -> list[tuple[LabelSet, Entry]]:
        """``eval_log(query, <the tenant's lines with start_ns <= ts < end_ns, in ingest
        order>, limit=limit, direction=direction)``, reading only what it must."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if direction not in ("backward", "forward"):
            raise ValueError(f"direction must be backward or forward, not {direction!r}")
        self._check_range(start_ns, end_ns)
        with self._read("searching log lines") as conn:
            plan = self._plan(tenant, query)
            return store_query.select(
                conn,
                plan,
                start_ns=start_ns,
                end_ns=end_ns,
                limit=limit,
                backward=direction == "backward",
            )

    def entries(
        self, tenant: str, query: LogQuery | MetricQuery, *, start_ns: int, end_ns: int
    ) -> Iterator[Entry]:
        """The tenant's lines with ``start_ns <= ts < end_ns`` that the stream selector and
        the indexes do not rule out, in no particular order: a superset of the query's
        matches, for ``eval_metric``/``eval_instant`` (which run the whole query)."""
        self._check_range(start_ns, end_ns)
        return self._entries(tenant, query, start_ns, end_ns)

    def _entries(
        self, tenant: str, query: LogQuery | MetricQuery, start_ns: int, end_ns: int
    ) -> Iterator[Entry]:
        with self._read("reading log lines") as conn:
            plan = self._plan(tenant, query)
            yield from store_query.candidates(conn, plan, start_ns=start_ns, end_ns=end_ns)

    def count_metric(
        self, tenant: str, query: MetricQuery, *, start_ns: int, end_ns: int, step_ns: int
    ) -> store_counts.Matrix | None:
        """``eval_metric(query, <the tenant's lines from start_ns - range to end_ns>,
        start_ns=..., end_ns=..., step_ns=...)`` counted in SQL (a ``rate`` under ``sum``
        up to float rounding), or None when the query has pipeline stages or the lines'
        structured metadata could change its series (then use :meth:`entries` and
        ``eval_metric``): see :mod:`~bfm_observe.logstore.store_counts`."""
        counted = store_counts.count_query(query)
        if counted is None:
            return None
        check_ts_ns(start_ns - counted.range_agg.range_ns, "start_ns - range")
        check_ts_ns(end_ns + 1, "end_ns + 1")
        selector = counted.range_agg.query
        with self._read("counting log lines") as conn:
            streams = [
                (stream_id, labels, self._catalogue.keys_of(stream_id))
                for stream_id, labels in self._catalogue.of_tenant(tenant)
                if select_streams(selector, labels)
            ]
            return store_counts.count_matrix(
                conn, counted, streams, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns
            )

    def labels(self, tenant: str, *, start_ns: int, end_ns: int) -> list[str]:
        """Label names of the tenant's streams with a line in ``[start_ns, end_ns)``,
        sorted (structured metadata is not a label)."""
        self._check_range(start_ns, end_ns)
        with self._read("listing labels") as conn:
            streams = store_query.streams_with_lines(
                conn, self._catalogue.of_tenant(tenant), start_ns=start_ns, end_ns=end_ns
            )
        return sorted({name for labels in streams for name in labels})

    def label_values(
        self,
        tenant: str,
        name: str,
        *,
        start_ns: int,
        end_ns: int,
        query: LogQuery | None = None,
    ) -> list[str]:
        """Values of label ``name`` among the tenant's streams with a line in
        ``[start_ns, end_ns)`` (and selected by ``query``'s selector), sorted."""
        self._check_range(start_ns, end_ns)
        with self._read("listing label values") as conn:
            candidates = [
                (sid, labels)
                for sid, labels in self._catalogue.of_tenant(tenant)
                if name in labels and (query is None or select_streams(query, labels))
            ]
            streams = store_query.streams_with_lines(
                conn, candidates, start_ns=start_ns, end_ns=end_ns
            )
        return sorted({labels[name] for labels in streams})

    def series(
        self, tenant: str, selectors: Sequence[LogQuery], *, start_ns: int, end_ns: int
    ) -> list[dict[str, str]]:
        """Label sets of the tenant's streams selected by any of ``selectors`` with a line
        in ``[start_ns, end_ns)``, sorted by their sorted labels."""
        if not selectors:
            raise ValueError("series needs at least one stream selector")
        self._check_range(start_ns, end_ns)
        with self._read("listing series") as conn:
            candidates = [
                (sid, labels)
                for sid, labels in self._catalogue.of_tenant(tenant)
                if any(select_streams(selector, labels) for selector in selectors)
            ]
            streams = store_query.streams_with_lines(
                conn, candidates, start_ns=start_ns, end_ns=end_ns
            )
        return sorted((dict(labels) for labels in streams), key=lambda d: sorted(d.items()))

    def trace(self, tenant: str, trace_id: str) -> list[SpanRecord]:
        """All stored spans of one trace, by start time (then end time and span id)."""
        with self._read("reading a trace") as conn:
            rows = store_spans.fetch_trace(conn, tenant, trace_id)
        return store_spans.spans_by_start(rows)

    # --- upkeep ---------------------------------------------------------------------------

    def enforce_retention(self) -> RetentionResult:
        """Delete lines and spans older than ``retention_s`` (by ``wall_clock``), then the
        oldest ones while the store is over ``max_disk_bytes`` (down to 90 % of it).
        Call it periodically (the server does, about once a minute)."""
        cutoff_ns = int((self._wall_clock() - self.retention_s) * 1e9)
        return retention.enforce(
            self._write, self.path, cutoff_ns=cutoff_ns, max_disk_bytes=self.max_disk_bytes
        )

    def stats(self) -> StoreStats:
        with self._read("reading statistics") as conn:
            lines, oldest, newest = conn.execute(
                "SELECT coalesce(sum(lines), 0), min(min_ts_ns), max(max_ts_ns) FROM chunks"
            ).fetchone()
            (spans,) = conn.execute("SELECT count(*) FROM spans").fetchone()
            (streams,) = conn.execute("SELECT count(*) FROM streams").fetchone()
        return StoreStats(
            lines=lines,
            spans=spans,
            streams=streams,
            disk_bytes=retention.disk_bytes(self.path),
            oldest_ts_ns=oldest,
            newest_ts_ns=newest,
        )

    def close(self) -> None:
        """Close every connection (readers still in use close when they finish)."""
        with self._write_lock:
            if self._closed:
                return
            with self._pool_lock:
                self._closed = True
                idle, self._pool = self._pool, []
            for conn in idle:
                conn.close()
            with suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
