"""The log store's SQLite file: tables, connections, errors and the stream catalogue.

Tables (schema version 1):

- ``streams``: one row per (tenant, label set); ``labels`` is canonical JSON (sorted keys),
  ``fingerprint`` the first 16 hex digits of its SHA-256. Streams are never deleted, so
  an id always means the same labels (the in-memory :class:`StreamCatalogue` relies on it).
- ``lines``: ``id`` (assigned in ingest order, never reused: ``meta.next_line_id``),
  ``stream_id``, ``ts_ns``, ``line``, ``metadata`` (JSON object, NULL when empty) and
  ``trace_id``: ``metadata["trace_id"]`` moved out of the JSON, as 16 bytes when it is 32
  lowercase hex digits (half the size in table and index), else as text; NULL when absent
  or empty. Indexes: ``(stream_id, ts_ns)`` and, partial, ``(trace_id, ts_ns)``.
- ``chunks``: line ids ``chunk * CHUNK_LINES + 1 .. (chunk + 1) * CHUNK_LINES``, with their
  live line count, min/max ``ts_ns`` and whether their timestamps rise with the id
  (``ordered``): the time bounds that let a newest-first search stop early, and the unit
  of retention.
- ``fts_<part>``: one FTS5 index per ``PART_CHUNKS`` chunks (external content: the text
  stays in ``lines``). Retention drops a whole partition's table when its last chunk is
  gone; deleting rows from one big FTS5 index would only add delete markers, and the
  space would come back at some later segment merge.
- ``spans``: one row per (tenant, trace_id, span_id), the rest of the span as JSON.
- ``stream_keys``: the structured metadata names each stream's lines have carried (empty
  values and ``trace_id`` included; never deleted, so a superset of the live lines'),
  known for the lines with ids from ``meta.keys_from_line_id`` on. A writer that keeps
  the table moves ``meta.keys_next_line_id`` along with ``next_line_id``; when the two
  differ at open, lines were stored by a bfm that does not (a file from before the table,
  or an older bfm since, which opens these files as before), and ``keys_from_line_id``
  moves up to ``next_line_id``: metric queries that reach those lines read them
  (:mod:`~bfm_observe.logstore.store_counts`).

Rows are written and read by :mod:`~bfm_observe.logstore.store_lines` (lines, chunks,
full-text rows) and :mod:`~bfm_observe.logstore.store_spans` (spans).

Tokenizer: ``trigram case_sensitive 1`` with ``detail=none``, ``columnsize=0``. Loki's
``|=`` is a case-sensitive substring test, and only a trigram index can answer "contains"
for any substring (``unicode61`` tokens miss ``|= "ailov"`` in ``failover``). Its answers
are only candidates: every ``|=`` string of 3 or more characters becomes an AND of its
trigrams (``detail=none`` has no phrase queries, and a trigram AND is a superset of the
substring matches), and the exact pipeline always runs on them; shorter strings are checked
with ``instr`` in SQL. FTS5 reads text up to a NUL, so NULs are indexed as spaces.

Measured here (SQLite 3.40, one of two busy cores, JSON lines of ~160 characters).
Tokenizers, 300,000 lines, bare SQLite: ``detail=full`` 798 bytes/line and 14,600
lines/s; ``detail=none`` 458 bytes/line and 19,700 lines/s, with the same candidates for
the benchmark's words; no full-text index 296 bytes/line and 53,000 lines/s. This store,
1 million lines of ``benchmarks/log_search.py`` pushed 5,000 at a time, no HTTP: 14,600
lines/s, 435 bytes/line; newest first, limit 100: trace id p99 0.4 ms, a rare word
(0.001 %) p99 6-13 ms, a common word (1 %) p99 3-6 ms.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

SCHEMA_VERSION = 1
CHUNK_LINES = 16_384
"""Line ids per chunk: the granularity of time bounds and of retention."""
PART_CHUNKS = 16
"""Chunks per full-text partition (262,144 line ids)."""
FTS_OPTIONS = (
    "line, content='lines', content_rowid='id', "
    "tokenize='trigram case_sensitive 1', detail=none, columnsize=0"
)
FTS_AUTOMERGE = 4
"""FTS5's default, kept on purpose: 16 ingests 22 % faster (17,800 against 14,600 lines/s,
1 million lines) but searches a rare word up to twice as slowly (more segments)."""
_FTS_NAME = re.compile(r"fts_(\d+)")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (tenant, fingerprint)
);
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY,
    stream_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    line TEXT NOT NULL,
    metadata TEXT,
    trace_id
);
CREATE INDEX IF NOT EXISTS lines_by_stream ON lines (stream_id, ts_ns);
CREATE INDEX IF NOT EXISTS lines_by_trace ON lines (trace_id, ts_ns)
    WHERE trace_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS stream_keys (
    stream_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (stream_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    chunk INTEGER PRIMARY KEY,
    lines INTEGER NOT NULL,
    min_ts_ns INTEGER NOT NULL,
    max_ts_ns INTEGER NOT NULL,
    ordered INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL,
    rest TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_trace ON spans (tenant, trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_by_end ON spans (end_ns);
"""


class LogStoreError(Exception):
    """The log store cannot do what was asked; the message names the file and the fix."""


class StoreFull(LogStoreError):
    """The disk (or SQLite's page limit) is full: nothing of the failed write was kept."""


def db_error(path: Path, exc: sqlite3.Error, action: str) -> LogStoreError:
    """The store error for a failed SQLite call (``StoreFull`` for SQLITE_FULL)."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(exc):
        return StoreFull(
            f"log store {path} is full ({exc}) while {action}; nothing of it was stored: "
            "free disk space, or lower the disk budget or retention so that retention "
            "deletes old lines"
        )
    return LogStoreError(f"log store {path} failed while {action}: {exc}")


def open_error(path: Path, exc: sqlite3.Error) -> LogStoreError:
    if not path.parent.is_dir():
        fix = f"the directory {path.parent} does not exist; create it or choose another path"
    elif "not a database" in str(exc):
        fix = "the file is not an SQLite database; move it away or choose another path"
    else:
        fix = "check that the path is a file in a writable directory"
    return LogStoreError(f"cannot open the log store at {path} ({exc}): {fix}")


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread
    one at a time. The writer creates the schema on a new file."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise open_error(path, exc) from None
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        if writer:
            # auto_vacuum only takes effect before the first table exists.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            _create_schema(path, conn)
        else:
            conn.execute("PRAGMA query_only = ON")
            conn.create_function("regexp", 2, _regexp, deterministic=True)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -32768")
    except sqlite3.Error as exc:
        conn.close()
        raise open_error(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regexp(pattern: str, text: str) -> bool:
    """SQL ``text REGEXP pattern``: an unanchored search, as LogQL's ``|~`` does."""
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        if len(_REGEX_CACHE) >= 256:
            _REGEX_CACHE.clear()
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
    return compiled.search(text) is not None


def _create_schema(path: Path, conn: sqlite3.Connection) -> None:
    wanted = {
        "schema_version": SCHEMA_VERSION,
        "chunk_lines": CHUNK_LINES,
        "part_chunks": PART_CHUNKS,
    }
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        firsts = [("next_line_id", 1), ("keys_from_line_id", 1), ("keys_next_line_id", 1)]
        conn.executemany(
            "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", [*wanted.items(), *firsts]
        )
        found = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        problem = next((k for k, v in wanted.items() if found.get(k) != v), None)
        if problem is None and found["keys_next_line_id"] != found["next_line_id"]:
            # lines stored without their metadata names (see the module's docstring)
            conn.execute(
                "UPDATE meta SET value = ? WHERE key IN ('keys_from_line_id', 'keys_next_line_id')",
                (found["next_line_id"],),
            )
        conn.execute("COMMIT" if problem is None else "ROLLBACK")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if problem is not None:
        raise LogStoreError(
            f"log store {path} was written with {problem} {found.get(problem)}, this bfm "
            f"uses {wanted[problem]}; use a matching bfm or another path"
        )


# --- chunks and full-text partitions ------------------------------------------------------


def chunk_of(line_id: int) -> int:
    return (line_id - 1) // CHUNK_LINES


def chunk_ids(chunk: int) -> tuple[int, int]:
    """The first and last line id of a chunk."""
    return chunk * CHUNK_LINES + 1, (chunk + 1) * CHUNK_LINES


def part_of(chunk: int) -> int:
    return chunk // PART_CHUNKS


def fts_table(part: int) -> str:
    return f"fts_{int(part)}"


def ensure_fts(conn: sqlite3.Connection, part: int) -> str:
    """The partition's FTS5 table, created when missing (inside a write transaction)."""
    table = fts_table(part)
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if found is None:
        conn.execute(f"CREATE VIRTUAL TABLE {table} USING fts5({FTS_OPTIONS})")
        conn.execute(
            f"INSERT INTO {table} ({table}, rank) VALUES ('automerge', ?)",  # noqa: S608
            (FTS_AUTOMERGE,),
        )
    return table


def fts_parts(conn: sqlite3.Connection) -> set[int]:
    """The partitions whose FTS5 table exists (shadow tables excluded)."""
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {int(m.group(1)) for (name,) in names if (m := _FTS_NAME.fullmatch(name))}


# --- stream catalogue ---------------------------------------------------------------------


def fingerprint(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class StreamCatalogue:
    """Every stream's id, labels and metadata names, in memory (streams are few and never
    deleted).

    Readers may see a stream or a metadata name here before the lines that bring it are
    committed; that only costs an empty lookup (or a slower exact count). After a failed
    write the writer reloads it (ids of rolled-back streams are reused by SQLite).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], int] = {}
        self._by_tenant: dict[str, dict[int, Mapping[str, str]]] = {}
        self._keys: dict[int, frozenset[str]] = {}

    def load(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT id, tenant, labels FROM streams").fetchall()
        keys: dict[int, set[str]] = {}
        for stream_id, key in conn.execute("SELECT stream_id, key FROM stream_keys"):
            keys.setdefault(stream_id, set()).add(key)
        with self._lock:
            self._ids.clear()
            self._by_tenant.clear()
            self._keys = {stream_id: frozenset(names) for stream_id, names in keys.items()}
            for stream_id, tenant, canonical in rows:
                self._add(stream_id, tenant, canonical)

    def _add(self, stream_id: int, tenant: str, canonical: str) -> None:
        self._ids[tenant, canonical] = stream_id
        labels = MappingProxyType(json.loads(canonical))
        self._by_tenant.setdefault(tenant, {})[stream_id] = labels

    def id_of(self, conn: sqlite3.Connection, tenant: str, canonical: str) -> int:
        """The stream's id, inserting it (inside the caller's write transaction)."""
        found = self._ids.get((tenant, canonical))
        if found is not None:
            return found
        cursor = conn.execute(
            "INSERT INTO streams (tenant, fingerprint, labels) VALUES (?, ?, ?)",
            (tenant, fingerprint(canonical), canonical),
        )
        stream_id = cursor.lastrowid
        assert stream_id is not None
        with self._lock:
            self._add(stream_id, tenant, canonical)
        return stream_id

    def add_keys(self, conn: sqlite3.Connection, stream_id: int, keys: Iterable[str]) -> None:
        """Note metadata names of the stream's lines (inside the caller's write
        transaction)."""
        known = self._keys.get(stream_id, frozenset())
        new = set(keys) - known
        if not new:
            return
        conn.executemany(
            "INSERT OR IGNORE INTO stream_keys (stream_id, key) VALUES (?, ?)",
            [(stream_id, key) for key in sorted(new)],
        )
        with self._lock:
            self._keys[stream_id] = known | new

    def keys_of(self, stream_id: int) -> frozenset[str]:
        """Metadata names the stream's lines carry (of lines from ``keys_from_line_id`` on)."""
        with self._lock:
            return self._keys.get(stream_id, frozenset())

    def of_tenant(self, tenant: str) -> list[tuple[int, Mapping[str, str]]]:
        with self._lock:
            return list(self._by_tenant.get(tenant, {}).items())

    def count(self) -> int:
        with self._lock:
            return len(self._ids)
