"""The log store's lines: validation, the row codecs, and how a batch is written.

A batch is validated whole before anything is written (:func:`prepare_lines`: a
ValueError names the bad record, and nothing is stored), then inserted under consecutive
line ids with its full-text rows and chunk bounds (:func:`insert_lines`), inside the
writer's transaction. The layout is in :mod:`~bfm_observe.logstore.store_schema`.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from bfm_observe.logstore.records import LogRecord
from bfm_observe.logstore.store_schema import (
    StreamCatalogue,
    chunk_ids,
    chunk_of,
    ensure_fts,
    part_of,
)

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

PreparedLine = tuple[str, str, int, str, "str | None", "bytes | str | None", tuple[str, ...]]
"""``(tenant, canonical labels, ts_ns, line, metadata JSON, trace_id column, metadata
names)``."""


def encodable(text: str) -> bool:
    """Whether SQLite can take the text (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_labels(labels: Mapping[str, str]) -> str:
    """Canonical JSON of a stream's labels; ValueError naming what is wrong."""
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError("a log stream needs at least one label")
    for name, value in labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise ValueError(f"invalid label name {name!r} (want [A-Za-z_][A-Za-z0-9_]*)")
        if not isinstance(value, str):
            raise ValueError(f"label {name} has a {type(value).__name__} value, not a string")
        if not value:
            raise ValueError(f"label {name} has an empty value")
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)


def check_ts_ns(ts_ns: object, what: str) -> int:
    if not isinstance(ts_ns, int) or isinstance(ts_ns, bool):
        raise ValueError(f"{what} must be an integer of nanoseconds, not {ts_ns!r}")
    if not _INT64_MIN <= ts_ns <= _INT64_MAX:
        raise ValueError(f"{what} {ts_ns} is outside the 64-bit range")
    return ts_ns


def trace_key(trace_id: str) -> bytes | str:
    """How a ``trace_id`` value is stored and looked up (bijective)."""
    return bytes.fromhex(trace_id) if _HEX32.fullmatch(trace_id) else trace_id


def encode_metadata(metadata: Mapping[str, str]) -> tuple[str | None, bytes | str | None]:
    """``(metadata JSON without a non-empty trace_id, trace_id column)``."""
    if not metadata:
        return None, None
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"invalid structured metadata name {key!r}")
        if not isinstance(value, str):
            raise ValueError(f"structured metadata {key} has a {type(value).__name__} value")
    trace_id = metadata.get("trace_id", "")
    if not trace_id:
        return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False), None
    rest = {k: v for k, v in metadata.items() if k != "trace_id"}
    text = json.dumps(rest, separators=(",", ":"), ensure_ascii=False) if rest else None
    return text, trace_key(trace_id)


def decode_metadata(text: str | None, trace: bytes | str | None) -> dict[str, str]:
    metadata: dict[str, str] = json.loads(text) if text else {}
    if trace is not None:
        metadata["trace_id"] = trace.hex() if isinstance(trace, bytes) else trace
    return metadata


# --- writing a batch ----------------------------------------------------------------------


def prepare_lines(records: Sequence[LogRecord]) -> list[PreparedLine]:
    """Validated rows ``(tenant, canonical labels, ts_ns, line, metadata, trace, names)``."""
    out: list[PreparedLine] = []
    canonical_of: dict[tuple[str, tuple[Any, ...]], str] = {}  # validated label sets
    for record in records:
        if not isinstance(record, LogRecord):
            raise ValueError(f"push takes LogRecord values, not {type(record).__name__}")
        if not isinstance(record.tenant, str) or not record.tenant:
            raise ValueError("a log line needs a non-empty tenant")
        try:
            key = (record.tenant, tuple(record.labels.items()))
            canonical = canonical_of.get(key)
        except (AttributeError, TypeError):  # not a mapping, or unhashable values
            key, canonical = None, None
        if canonical is None:
            canonical = canonical_labels(record.labels)
            if not encodable(canonical) or not encodable(record.tenant):
                raise ValueError(f"labels {canonical!r} are not valid Unicode")
            if key is not None:
                canonical_of[key] = canonical
        ts_ns = check_ts_ns(record.ts_ns, "a log line's ts_ns")
        if not isinstance(record.line, str):
            raise ValueError(f"the log line at {ts_ns} is a {type(record.line).__name__}")
        if not encodable(record.line):
            raise ValueError(f"the log line at {ts_ns} is not valid Unicode (lone surrogate)")
        metadata, trace = encode_metadata(record.metadata)
        if (metadata and not encodable(metadata)) or (
            isinstance(trace, str) and not encodable(trace)
        ):
            raise ValueError(f"the structured metadata of the line at {ts_ns} is not valid Unicode")
        names = tuple(record.metadata) if record.metadata else ()
        out.append((record.tenant, canonical, ts_ns, record.line, metadata, trace, names))
    return out


def insert_lines(
    conn: sqlite3.Connection,
    catalogue: StreamCatalogue,
    first_id: int,
    prepared: Sequence[PreparedLine],
) -> None:
    """Insert prepared lines with ids ``first_id...`` (inside the writer's transaction),
    noting their streams' metadata names."""
    rows = []
    names: set[tuple[int, tuple[str, ...]]] = set()
    for i, (tenant, canonical, ts, line, md, tr, keys) in enumerate(prepared):
        stream_id = catalogue.id_of(conn, tenant, canonical)
        rows.append((first_id + i, stream_id, ts, line, md, tr))
        if keys:
            names.add((stream_id, keys))
    for stream_id, keys in names:
        catalogue.add_keys(conn, stream_id, keys)
    conn.executemany(
        "INSERT INTO lines (id, stream_id, ts_ns, line, metadata, trace_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    index_lines(conn, first_id, [(ts, line) for _, _, ts, line, _, _, _ in prepared])


def index_lines(conn: sqlite3.Connection, first_id: int, lines: list[tuple[int, str]]) -> None:
    """Full-text rows and chunk bounds for lines with ids ``first_id...``."""
    last_id = first_id + len(lines) - 1
    for chunk in range(chunk_of(first_id), chunk_of(last_id) + 1):
        lo, hi = chunk_ids(chunk)
        lo, hi = max(lo, first_id), min(hi, last_id)
        piece = lines[lo - first_id : hi - first_id + 1]
        table = ensure_fts(conn, part_of(chunk))
        conn.executemany(
            f"INSERT INTO {table} (rowid, line) VALUES (?, ?)",  # noqa: S608
            # FTS5 reads text up to the first NUL; no FTS query string holds one
            ((lo + i, line.replace("\x00", " ")) for i, (_, line) in enumerate(piece)),
        )
        stamps = [ts for ts, _ in piece]
        ordered = all(a <= b for a, b in itertools.pairwise(stamps))
        low, high = min(stamps), max(stamps)
        old = conn.execute(
            "SELECT lines, min_ts_ns, max_ts_ns, ordered FROM chunks WHERE chunk = ?",
            (chunk,),
        ).fetchone()
        if old is not None:
            ordered = ordered and bool(old[3]) and stamps[0] >= old[2]
            low, high = min(low, old[1]), max(high, old[2])
        conn.execute(
            "INSERT OR REPLACE INTO chunks (chunk, lines, min_ts_ns, max_ts_ns, ordered) "
            "VALUES (?, ?, ?, ?, ?)",
            (chunk, len(piece) + (old[0] if old else 0), low, high, int(ordered)),
        )
