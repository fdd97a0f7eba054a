"""Metric queries counted in SQL (``store_counts``) against the reference evaluator.

``LogStore.count_metric`` must give exactly what ``eval_metric`` gives over all of the
tenant's lines (a ``rate`` under ``sum`` up to float rounding: see ``store_counts``), or
None; it must not give None when no structured metadata can change the series; and the
HTTP API must use it (``entries`` is never called for a query without stages). Chunks
are tiny (8 line ids) so that a file from before ``stream_keys`` has lines on both sides
of ``keys_from_line_id`` in a few dozen lines.
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.logstore_data import metric_query

from bfm_observe.logstore import http_api, store_counts, store_schema
from bfm_observe.logstore.logql import Entry, LogQLError, MetricQuery
from bfm_observe.logstore.logql_eval import LabelSet, eval_instant, eval_metric
from bfm_observe.logstore.records import LogRecord
from bfm_observe.logstore.store import LogStore, LogStoreError

S = 1_000_000_000
Q = S // 4  # timestamps, steps and ranges on a quarter-second grid hit window edges
T1 = "4bf92f3577b34da6a3ce929d0e0e4736"
API_A = {"app": "api", "site": "a"}
API_B = {"app": "api", "site": "b"}
DB_A = {"app": "db", "site": "a", "level": "warn"}
GW = {"app": "gw", "site": "c", "site_extracted": "x"}  # metadata `site` lands on it
BAD = {"app": "bad", "__error__": "x"}  # the exact path refuses its series
Matrix = dict[LabelSet, list[tuple[int, float]]]


@pytest.fixture(autouse=True, scope="module")
def tiny_chunks() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_schema, "CHUNK_LINES", 8)
        patch.setattr(store_schema, "PART_CHUNKS", 4)
        yield


def entries_of(
    records: Sequence[LogRecord], first_ns: int = 0, last_ns: int = 2**63
) -> list[Entry]:
    fake = [r for r in records if r.tenant == "fake" and first_ns <= r.ts_ns <= last_ns]
    return [Entry(r.ts_ns, r.line, dict(r.labels), dict(r.metadata)) for r in fake]


def counts(store: LogStore, query: MetricQuery, start_s: int, end_s: int) -> Matrix | None:
    """``count_metric`` at every second from ``start_s`` to ``end_s``."""
    return store.count_metric("fake", query, start_ns=start_s * S, end_ns=end_s * S, step_ns=S)


def sql(path: Path, *statements: str) -> dict[str, int]:
    """Run the statements on the file; its ``meta`` table after them."""
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
        found = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    conn.close()
    return found


def range_of(query: MetricQuery) -> int:
    return store_counts.count_query(query).range_agg.range_ns  # type: ignore[union-attr]


def reference(
    query: MetricQuery, records: Sequence[LogRecord], start_ns: int, end_ns: int, step_ns: int
) -> Matrix | None:
    """``eval_metric`` over the lines the API reads for it (``[start - range, end]``),
    None when it refuses the query."""
    entries = entries_of(records, start_ns - range_of(query), end_ns)
    try:
        return eval_metric(query, entries, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    except LogQLError:
        return None


def as_rate(matrix: Matrix, seconds: float) -> Matrix:
    return {k: [(t, v / seconds) for t, v in points] for k, points in matrix.items()}


def close(got: Matrix, want: Matrix) -> bool:
    flat = [(k, t, v) for k, points in got.items() for t, v in points]
    other = [(k, t, v) for k, points in want.items() for t, v in points]
    return len(flat) == len(other) and all(
        a[:2] == b[:2] and math.isclose(a[2], b[2], rel_tol=1e-9)
        for a, b in zip(flat, other, strict=True)
    )


# --- random lines, queries and windows -----------------------------------------------------

HARMLESS = [{}, {"trace_id": T1}, {"trace_id": ""}, {"span_id": "s1", "note": ""}]
ANY = [*HARMLESS, {"site": "z"}, {"app": "y", "site_extracted": "w"}, {"__error__": "boom"}]
SELECTORS = ['{app=~".+"}', '{app="api"}', '{site="a"}', '{app=~"api|db"}', '{app="none"}']
SHAPES = {  # template: the innermost sum's grouping (None: a topk or no aggregation)
    "{r}": None,
    "sum({r})": (),
    "sum by (site) ({r})": ("site",),
    "sum by (app, site) ({r})": ("app", "site"),
    "sum by (level) ({r})": ("level",),
    "sum by (trace_id) ({r})": ("trace_id",),
    "sum by (site_extracted) ({r})": ("site_extracted",),
    "topk(1, {r})": None,
    "topk by (site) (2, {r})": None,
    "topk(1, sum by (site) ({r}))": ("site",),  # ties of rates: see store_counts
    "sum(topk by (app) (1, {r}))": None,
    "sum by (site) (sum by (app, site) ({r}))": ("app", "site"),
}
STREAMS = [API_A, API_B, DB_A, GW]


@st.composite
def lines(draw: st.DrawFn) -> tuple[str, list[LogRecord]]:
    """No metadata, metadata that changes no ``sum by (site)``, or any (and ``__error__``)."""
    mode = draw(st.sampled_from(["none", "harmless", "any"]))
    metadata = {"none": [{}], "harmless": HARMLESS, "any": ANY}[mode]
    record = st.builds(
        LogRecord,
        tenant=st.sampled_from(["fake", "fake", "other"]),
        labels=st.sampled_from([*STREAMS, BAD] if mode == "any" else STREAMS),
        ts_ns=st.integers(0, 120).map(lambda q: q * Q),
        line=st.sampled_from(["x", "failover", '{"level":"error"}']),
        metadata=st.sampled_from(metadata),
    )
    return mode, draw(st.lists(record, min_size=10, max_size=60))


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, int]:
    """``(start_ns, end_ns, step_ns)``: an instant or up to 41 steps, the end off-step."""
    start_ns, step_ns = draw(st.integers(-10, 125)) * Q, draw(st.sampled_from([1, 2, 3, 8, 30])) * Q
    steps = draw(st.integers(0, 40))
    instant = draw(st.booleans())
    return start_ns, start_ns if instant else start_ns + steps * step_ns + steps % 3 * Q, step_ns


def check(
    store: LogStore, records: list[LogRecord], text: str, window: tuple[int, int, int]
) -> Matrix | None:
    """The counts, checked against ``eval_metric``."""
    start_ns, end_ns, step_ns = window
    query = metric_query(text)
    got = store.count_metric("fake", query, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    if got is None:
        return None
    want = reference(query, records, *window)
    assert want is not None, f"{text}: counted a query the exact path refuses"
    if "rate(" not in text:
        assert got == want, text
        return got
    counted = reference(metric_query(text.replace("rate(", "count_over_time(")), records, *window)
    assert counted is not None
    assert got == as_rate(counted, range_of(query) / 1e9), text
    assert text.startswith("topk(1, sum") or close(got, want), text
    return got


@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=lines(),
    cut=st.integers(0, 60),
    window=windows(),
    inner=st.tuples(
        st.sampled_from(["count_over_time", "rate"]),
        st.sampled_from(SELECTORS),
        st.sampled_from([250, 750, 1000, 1500, 5000, 10000, 30000]),
    ).map(lambda f: f"{f[0]}({f[1]}[{f[2]}ms])"),
    shapes=st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=3),
    seek_lines=st.sampled_from([0, store_counts.SEEK_LINES, 10**9]),  # all counted, or read
)
def test_counts_equal_eval_metric(
    case: tuple[str, list[LogRecord]],
    cut: int,
    window: tuple[int, int, int],
    inner: str,
    shapes: list[str],
    seek_lines: int,
) -> None:
    mode, records = case
    with (
        pytest.MonkeyPatch.context() as patch,
        tempfile.TemporaryDirectory() as tmp,
        LogStore(Path(tmp) / "logs.db") as store,
    ):
        patch.setattr(store_counts, "SEEK_LINES", seek_lines)
        store.push(records[:cut])  # the lines are in no particular time order
        store.push(records[cut:])
        for template in shapes:
            by = SHAPES[template]
            harmless = by is not None and not {"trace_id", "span_id", "note"} & set(by)
            got = check(store, records, template.format(r=inner), window)
            assert got is not None or not (mode == "none" or (mode == "harmless" and harmless))


METADATA_CASES = [
    # (stream, metadata, query grouping, counted): where the metadata lands decides
    (API_A, {"site": "z"}, "by (site)", True),  # lands on site_extracted
    (API_A, {"site": "z"}, "by (site_extracted)", False),
    (GW, {"site": "z"}, "by (site)", True),
    (GW, {"site": "z"}, "by (site_extracted)", False),  # overwrites the stream label
    (GW, {"site_extracted": "z"}, "by (site_extracted)", True),  # site_extracted_extracted
    (API_A, {"level": ""}, "by (level)", False),  # an empty value is still a label
    (API_A, {"trace_id": T1}, "", True),
    (API_A, {"__error__": ""}, "", False),
]


@pytest.mark.parametrize(("labels", "metadata", "by", "counted"), METADATA_CASES)
def test_where_metadata_lands_decides_what_is_counted(
    tmp_path: Path, labels: dict[str, str], metadata: dict[str, str], by: str, counted: bool
) -> None:
    records = [LogRecord("fake", API_B, 25 * S, "plain")]
    records += [LogRecord("fake", labels, t * S, "with metadata", metadata) for t in (10, 25)]
    query = metric_query(f'sum {by} (count_over_time({{app=~".+"}}[10s]))')
    with LogStore(tmp_path / "logs.db") as store:
        store.push(records)
        got = counts(store, query, 20, 30)
        assert (got is not None) == counted
        assert got in (None, reference(query, records, 20 * S, 30 * S, S))
        # the API reads [10 s, 24 s]: the line at 10 s is in no window, but it is read
        assert (counts(store, query, 20, 24) is not None) == counted
        assert counts(store, query, 21, 24) == {}


# --- the HTTP API uses it ------------------------------------------------------------------

HOUR = 3600 * S
NOW = 1_700_000_000 * S
BENCH_LIKE = [
    LogRecord(
        "fake",
        {"namespace": "hemisphere", "site": "abw"[i % 3], "component": f"c{i % 4}"},
        NOW - (i * 37 % 7200) * S,  # two hours, out of order
        f"message {i}",
        {"trace_id": f"{i // 8:032x}"},
    )
    for i in range(400)
]
QUERIES = [  # (query, counted)
    ('sum by (site) (count_over_time({namespace="hemisphere"}[1h]))', True),
    ('sum by (site) (rate({namespace="hemisphere"}[10m]))', True),
    ('topk(2, sum by (site, component) (count_over_time({namespace="hemisphere"}[30m])))', True),
    ('sum(count_over_time({site=~"a|b"}[5m]))', True),
    ('sum by (site) (count_over_time({namespace="hemisphere"} |= "message 1" [1h]))', False),
    ('count_over_time({namespace="hemisphere"}[1h])', False),  # one series per trace id
    ('sum by (trace_id) (count_over_time({namespace="hemisphere"}[1h]))', False),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with LogStore(tmp_path / "logs.db") as opened:
        opened.push(BENCH_LIKE)
        yield opened


def answers(store: LogStore, text: str) -> list[tuple[Any, ...]]:
    """``query_range`` then ``query``: ``(labels, time, value)`` of every point."""
    window = {"start": [str(NOW - HOUR)], "end": [str(NOW)], "step": ["300"]}
    ranged = http_api.query_range(store, "fake", {"query": [text], **window}, NOW)
    instant = http_api.query_instant(store, "fake", {"query": [text], "time": [str(NOW)]}, NOW)
    points = [(r["metric"], *p) for r in ranged["data"]["result"] for p in r["values"]]
    return points + [(r["metric"], *r["value"]) for r in instant["data"]["result"]]


@pytest.mark.parametrize(("text", "counted"), QUERIES)
def test_the_api_counts_queries_without_stages_and_reads_the_others(
    store: LogStore, text: str, counted: bool
) -> None:
    with mock.patch.object(LogStore, "entries", autospec=True, side_effect=LogStore.entries) as m:
        fast = answers(store, text)
        assert m.call_count == (0 if counted else 2)
        with mock.patch.object(LogStore, "count_metric", return_value=None):
            exact = answers(store, text)
    assert fast
    if "rate(" in text:  # the sum of rates: up to float rounding
        assert [p[:2] for p in fast] == [p[:2] for p in exact]
        assert [float(p[2]) for p in fast] == pytest.approx([float(p[2]) for p in exact])
        return
    assert fast == exact
    vector = eval_instant(metric_query(text), entries_of(BENCH_LIKE), NOW)
    instant = [(dict(k), NOW / 1e9, http_api._number(v)) for k, v in vector.items()]
    assert fast[-len(instant) :] == instant


def test_metadata_named_error_is_still_refused(store: LogStore) -> None:
    store.push([LogRecord("fake", {"namespace": "hemisphere"}, NOW - S, "x", {"__error__": "e"})])
    text = 'sum(count_over_time({namespace="hemisphere"}[1h]))'
    with pytest.raises(http_api.ApiError, match="pipeline error"):  # as without the counts
        answers(store, text)


def test_bad_windows_are_refused_as_eval_metric_refuses_them(store: LogStore) -> None:
    query = metric_query(QUERIES[0][0])
    with pytest.raises(ValueError, match="step must be positive"):
        store.count_metric("fake", query, start_ns=0, end_ns=S, step_ns=0)
    with pytest.raises(ValueError, match="end must not be before start"):
        store.count_metric("fake", query, start_ns=HOUR * 2, end_ns=HOUR, step_ns=S)
    with pytest.raises(ValueError, match="64-bit"):
        store.count_metric("fake", query, start_ns=-(2**63), end_ns=0, step_ns=S)


# --- files from before the metadata names, and older bfm versions --------------------------

BEFORE = (  # what a bfm from before stream_keys left
    "DROP TABLE stream_keys",
    "DELETE FROM meta WHERE key IN ('keys_from_line_id', 'keys_next_line_id')",
)


def test_a_file_from_before_is_counted_only_past_its_old_lines(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    old = [LogRecord("fake", API_A, i * S, "old", {"site": "z"}) for i in range(12)]
    with LogStore(path) as first:
        first.push(old)
    sql(path, *BEFORE)
    query = metric_query('sum by (site) (count_over_time({app=~".+"}[10s]))')
    new = [LogRecord("fake", API_B, (100 + i) * S, "new") for i in range(20)]
    minute = 'sum by (site) (count_over_time({app=~".+"}[1m]))'
    with LogStore(path) as second:
        found = sql(path)  # schema version 1: a bfm from before opens the file as before
        assert [found[k] for k in ("schema_version", "keys_from_line_id", "keys_next_line_id")] == [
            1,
            13,
            13,
        ]
        assert counts(second, query, 5, 11) is None  # ids 1-12: metadata names unknown
        second.push(new)  # ids 13-32; chunk 1 (ids 9-16) holds lines up to 103 s
        assert sql(path)["keys_next_line_id"] == 33
        assert counts(second, query, 113, 119) is None  # the API reads [103 s, 119 s]
        got = counts(second, query, 114, 119)
        assert got is not None
        assert got == reference(query, old + new, 114 * S, 119 * S, S)
        params = {"query": [minute], "start": ["0"], "end": ["130"], "step": ["10"]}
        ranged = http_api.query_range(second, "fake", params, 130 * S)
    want = reference(metric_query(minute), old + new, 0, 130 * S, 10 * S)
    assert want is not None
    assert ranged["data"]["result"] == [
        {"metric": dict(k), "values": [[t / 1e9, http_api._number(v)] for t, v in points]}
        for k, points in want.items()
    ]
    with LogStore(path) as third:  # reopened: nothing has changed
        assert sql(path)["keys_from_line_id"] == 13
        assert counts(third, query, 114, 119) == got


def test_lines_an_older_bfm_stored_since_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "logs.db"
    first = [LogRecord("fake", API_A, i * S, "x") for i in range(20)]
    later = [LogRecord("fake", API_A, (30 + i) * S, "y", {"trace_id": T1}) for i in range(20)]
    newest = [LogRecord("fake", API_A, (60 + i) * S, "z") for i in range(16)]
    query = metric_query('count_over_time({app="api"}[10s])')
    with LogStore(path) as store:
        store.push(first)
    assert sql(path)["keys_next_line_id"] == 21
    # an older bfm stores lines with metadata, notes no names, moves only next_line_id
    with monkeypatch.context() as patch:
        patch.setattr(store_schema.StreamCatalogue, "add_keys", lambda *_a: None)
        with LogStore(path) as older:
            older.push(later)
    sql(path, "UPDATE meta SET value = 21 WHERE key = 'keys_next_line_id'")
    with LogStore(path) as store:
        assert sql(path)["keys_from_line_id"] == 41  # every line so far: names unknown
        assert counts(store, query, 10, 15) is None
        assert counts(store, query, 40, 49) is None
        store.push(newest)  # ids 41-56, chunks 5 and 6
        got = counts(store, query, 70, 75)
        assert got is not None
        assert got == reference(query, first + later + newest, 70 * S, 75 * S, S)


def test_other_versions_and_chunk_sizes_are_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    LogStore(path).close()
    sql(path, "UPDATE meta SET value = 2 WHERE key = 'schema_version'")
    with pytest.raises(LogStoreError, match="schema_version 2, this bfm uses 1"):
        LogStore(path)
    path = tmp_path / "other.db"
    LogStore(path).close()
    sql(path, *BEFORE, "UPDATE meta SET value = 99 WHERE key = 'chunk_lines'")
    with pytest.raises(LogStoreError, match="chunk_lines 99"):
        LogStore(path)
    assert "keys_from_line_id" not in sql(path)
