"""The log store's storage engine against the reference LogQL evaluator, on real SQLite files.

``select`` must answer exactly what ``eval_log`` answers over the tenant's lines in the
range, taken in ingest order; ``eval_metric`` over ``entries`` exactly what it answers over
all lines. Chunks are made tiny here (8 line ids, 4 chunks a full-text partition) and the
per-stream merge is limited to 2 streams, so a few dozen lines cross many chunks and
partitions and every access path (trace index, full-text, per-stream merge, chunk scan)
is taken; a scan reads per stream when at most half of the tenant's streams are selected.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.logstore_data import log_query, metric_query

from bfm_observe.logstore import logql_eval, store_query, store_schema
from bfm_observe.logstore.logql import Entry, LogQuery, parse
from bfm_observe.logstore.logql_eval import eval_log, eval_metric
from bfm_observe.logstore.records import LogRecord, SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.store import LogStore, LogStoreError, StoreFull

S = 1_000_000_000
T1 = "4bf92f3577b34da6a3ce929d0e0e4736"
T2 = "00f067aa0ba902b7a3ce929d0e0e4736"
API_A = {"app": "api", "site": "a"}
API_B = {"app": "api", "site": "b"}
DB_A = {"app": "db", "site": "a"}
GW_A = {"app": "api-gw", "site": "a", "level": "warn"}
ALL_STREAMS = (API_A, API_B, DB_A, GW_A)
Direction = Literal["backward", "forward"]


@pytest.fixture(autouse=True, scope="module")
def tiny_chunks() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_schema, "CHUNK_LINES", 8)
        patch.setattr(store_schema, "PART_CHUNKS", 4)
        patch.setattr(store_query, "MERGE_MAX_STREAMS", 2)
        patch.setattr(store_query, "NARROW_SHARE", 2)
        yield


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def entry(record: LogRecord) -> Entry:
    return Entry(record.ts_ns, record.line, dict(record.labels), dict(record.metadata))


def in_range(records: Sequence[LogRecord], tenant: str, start_ns: int, end_ns: int) -> list[Entry]:
    return [entry(r) for r in records if r.tenant == tenant and start_ns <= r.ts_ns < end_ns]


def rec(
    ts_s: float,
    line: str,
    labels: dict[str, str] = API_A,
    metadata: dict[str, str] | None = None,
    tenant: str = "fake",
) -> LogRecord:
    return LogRecord(tenant, labels, int(ts_s * S), line, metadata or {})


LINES = [
    rec(1, '{"level":"info","msg":"started","req":{"id":7}}', API_A, {"trace_id": T1}),
    rec(2, '{"level":"error","msg":"timeout","status":503}', API_A, {"trace_id": T1}),
    rec(3, "plain text error line", API_B, {"trace_id": T2, "user": "ann"}),
    rec(4, '{"level":"warn","msg":"slow query","status":200}', DB_A, {"trace_id": T1}),
    rec(5, '{"level":"error","msg":"Connection refused","status":500}', GW_A),
    rec(5, "same second, other stream", API_B, {"trace_id": ""}),
    rec(2.5, "late line, ingested out of order: failover", API_A, {"trace_id": T2}),
    rec(6, "failover decided", DB_A, {"trace_id": "not-hex-at-all"}),
    rec(7, "ab", API_A),
    rec(9, "twin", API_B, {"note": ""}),
    rec(9, "twin", API_B),
    rec(0.5, "very early failover line", GW_A, {"trace_id": T1}),
    rec(8, '{"trace_id":"' + T2 + '","msg":"json names a trace"}', API_B, {"trace_id": T1}),
] + [
    rec(10 + i, f"bulk line {i} {'failover' if i % 3 == 0 else 'steady'}", API_A) for i in range(40)
]

QUERIES = [
    '{app="api"}',
    '{app=~"api.*"}',
    '{app=~".+", site!="b"}',
    '{app=~".+"} |= "failover"',
    '{app=~".+"} |= "fail" != "decided"',
    '{app=~".+"} |= "ab"',
    '{app=~".+"} |= "e"',
    '{app=~".+"} |~ "err(or)?"',
    '{app=~".+"} !~ "bulk"',
    f'{{app=~".+"}} | trace_id="{T1}"',
    f'{{app="api"}} | trace_id="{T2}"',
    '{app=~".+"} | trace_id="not-hex-at-all"',
    f'{{app=~".+"}} | trace_id="{T1}" or level="warn"',
    f'{{app=~".+"}} | trace_id="{T1}" and user=""',
    f'{{app=~".+"}} | json | trace_id="{T2}"',
    '{app=~".+"} | json | level="error"',
    '{app=~".+"} | json | status >= 500',
    '{app=~".+"} | user="ann"',
    '{app="nothing"}',
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with LogStore(tmp_path / "logs.db", wall_clock=Clock(100.0)) as opened:
        yield opened


def check_select(
    store: LogStore,
    records: Sequence[LogRecord],
    text: str,
    *,
    tenant: str = "fake",
    start_ns: int = 0,
    end_ns: int = 10**12,
    limit: int = 1000,
    direction: Direction = "backward",
) -> None:
    query = log_query(text)
    got = store.select(
        tenant, query, start_ns=start_ns, end_ns=end_ns, limit=limit, direction=direction
    )
    want = eval_log(
        query, in_range(records, tenant, start_ns, end_ns), limit=limit, direction=direction
    )
    assert got == want, text


# --- log queries ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", QUERIES)
def test_select_equals_eval_log(store: LogStore, text: str) -> None:
    assert store.push(LINES[:20]) == 20
    assert store.push(LINES[20:]) == len(LINES) - 20
    for direction in ("backward", "forward"):
        for limit in (1, 3, 1000):
            check_select(store, LINES, text, limit=limit, direction=direction)
        check_select(
            store, LINES, text, start_ns=2 * S, end_ns=20 * S, limit=4, direction=direction
        )


def test_limit_and_direction_are_checked(store: LogStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.select("fake", log_query('{app="api"}'), start_ns=0, end_ns=1, limit=0)
    with pytest.raises(ValueError, match="direction"):
        store.select(
            "fake",
            log_query('{app="api"}'),
            start_ns=0,
            end_ns=1,
            limit=1,
            direction="sideways",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="before start_ns"):
        store.select("fake", log_query('{app="api"}'), start_ns=5, end_ns=1, limit=1)


WORDS = ["alpha", "failover", "fail", "over", "ab", "x", '"quoted"', "épée", "日本語"]
TRACES = [T1, T2, "custom-trace"]
GEN_QUERIES = [
    '{app=~".+"}',
    '{app="api"}',
    '{site="a"}',
    '{app=~"api.*"} |= "failover"',
    '{app=~".+"} |= "fail" |= "over"',
    '{app=~".+"} |= "ab"',
    '{app=~".+"} != "alpha"',
    '{app=~".+"} |= "ove" != "fail"',
    '{app=~".+"} |= "\\"quoted\\""',
    '{app=~".+"} |= "épé"',
    f'{{app=~".+"}} | trace_id="{T1}"',
    f'{{site="a"}} | trace_id="{T2}"',
    '{app=~".+"} | trace_id="custom-trace"',
    '{app=~".+"} | json | level="error"',
]

records_strategy = st.lists(
    st.builds(
        LogRecord,
        tenant=st.sampled_from(["fake", "other"]),
        labels=st.sampled_from(ALL_STREAMS),
        ts_ns=st.integers(0, 30).map(lambda t: t * S),
        line=st.one_of(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
            st.sampled_from(["error", "info"]).map(lambda lv: json.dumps({"level": lv})),
        ),
        metadata=st.one_of(
            st.just({}),
            st.sampled_from(TRACES).map(lambda t: {"trace_id": t}),
            st.just({"trace_id": "", "user": "bob"}),
            st.just({"note": ""}),  # same result labels as {}: only ingest order tells apart
        ),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=records_strategy,
    cut=st.integers(0, 60),
    limit=st.integers(1, 6),
    start_s=st.integers(0, 30),
    width_s=st.integers(0, 31),
)
def test_select_equals_eval_log_for_out_of_order_ingest(
    records: list[LogRecord], cut: int, limit: int, start_s: int, width_s: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp, LogStore(Path(tmp) / "logs.db") as store:
        store.push(records[:cut])
        store.push(records[cut:])
        start_ns, end_ns = start_s * S, (start_s + width_s) * S
        for text in GEN_QUERIES:
            for direction in ("backward", "forward"):
                check_select(
                    store,
                    records,
                    text,
                    start_ns=start_ns,
                    end_ns=end_ns,
                    limit=limit,
                    direction=direction,
                )
        check_select(store, records, '{app=~".+"}', tenant="other", limit=limit)


@settings(max_examples=30, deadline=None)
@given(
    lines=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=20),
    pick=st.integers(0, 19),
    at=st.integers(0, 12),
    size=st.integers(1, 6),
)
def test_substring_search_over_any_unicode(lines: list[str], pick: int, at: int, size: int) -> None:
    """The trigram prefilter never loses a line that contains the string."""
    clean = [line.encode("utf-8", "replace").decode("utf-8") for line in lines]
    records = [rec(i, line) for i, line in enumerate(clean)]
    source = clean[pick % len(clean)]
    needle = source[at : at + size] or "xyz"
    text = '{app="api"} |= ' + json.dumps(needle, ensure_ascii=False)
    try:
        parse(text)
    except ValueError:
        return  # not every JSON string escape is a LogQL string escape
    with tempfile.TemporaryDirectory() as tmp, LogStore(Path(tmp) / "logs.db") as store:
        store.push(records)
        check_select(store, records, text, limit=100)
        check_select(store, records, text.replace("|=", "!="), limit=100)
        pattern = '{app="api"} |~ ' + json.dumps(re.escape(needle), ensure_ascii=False)
        check_select(store, records, pattern, limit=100)
        check_select(store, records, pattern.replace("|~", "!~"), limit=100)


# --- metric queries ----------------------------------------------------------------------


METRICS = [
    'count_over_time({app=~".+"}[5s])',
    'count_over_time({app="db"}[5s])',
    'sum by (app) (count_over_time({app=~".+"} |= "failover" [10s]))',
    f'sum by (site) (rate({{app=~".+"}} | trace_id="{T1}" [4s]))',
    'topk(1, count_over_time({site="a"} != "bulk" [20s]))',
    'sum(count_over_time({app=~".+"} | json | __error__="" | level="error" [30s]))',
]


@pytest.mark.parametrize("text", METRICS)
def test_eval_metric_over_entries_equals_eval_metric_over_all_lines(
    store: LogStore, text: str
) -> None:
    store.push(LINES)
    query = metric_query(text)
    start_ns, end_ns, step_ns = 0, 50 * S, 2 * S
    window_ns = 30 * S
    entries = list(store.entries("fake", query, start_ns=start_ns - window_ns, end_ns=end_ns + 1))
    everything = in_range(LINES, "fake", -(10**12), 10**12)
    assert all(e in everything and -window_ns <= e.ts_ns <= end_ns for e in entries)
    got = eval_metric(query, entries, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    want = eval_metric(query, everything, start_ns=start_ns, end_ns=end_ns, step_ns=step_ns)
    assert got == want
    assert got  # the data does give each query points


def test_entries_are_prefiltered(store: LogStore) -> None:
    store.push(LINES)
    found = list(
        store.entries("fake", log_query('{app="db"} |= "failover"'), start_ns=0, end_ns=10**12)
    )
    assert [e.line for e in found] == ["failover decided"]
    traced = store.entries(
        "fake", log_query(f'{{app=~".+"}} | trace_id="{T2}"'), start_ns=0, end_ns=10**12
    )
    assert sorted(e.ts_ns for e in traced) == [int(2.5 * S), 3 * S]


# --- reading less than everything --------------------------------------------------------


def count_pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    runs = [0]
    real = logql_eval.run_pipeline

    def counting(query: LogQuery, entry: Entry) -> dict[str, str] | None:
        runs[0] += 1
        return real(query, entry)

    monkeypatch.setattr(store_query, "run_pipeline", counting)
    return runs


@pytest.mark.parametrize(
    ("text", "streams"),
    [
        ('{app="api"} |= "failover"', 1),  # full text, by chunk
        ('{app="api"}', 1),  # per-stream merge
        ('{app=~".+"}', 3),  # chunk scan (more streams than MERGE_MAX_STREAMS)
        (f'{{app=~".+"}} | trace_id="{T1}"', 3),  # trace index
    ],
)
def test_newest_first_stops_after_the_limit(
    store: LogStore, monkeypatch: pytest.MonkeyPatch, text: str, streams: int
) -> None:
    labels = [API_A, API_B, DB_A][:streams]
    records = [
        rec(i, f"line {i} failover", labels[i % streams], {"trace_id": T1}) for i in range(400)
    ]
    for start in range(0, 400, 50):
        store.push(records[start : start + 50])
    runs = count_pipeline_runs(monkeypatch)
    for direction in ("backward", "forward"):
        check_select(store, records, text, limit=5, direction=direction)
    assert runs[0] <= 2 * (8 + 5), f"{text} ran the pipeline on {runs[0]} of 400 lines"


def test_unordered_chunks_are_still_searched_by_their_newest_line(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late batch of old lines, and one line from the future early on."""
    records = [rec(1000, "from the future: failover")]
    records += [rec(100 + i, f"on time {i} failover") for i in range(200)]
    records += [rec(50 - i / 10, f"late {i} failover") for i in range(200)]
    store.push(records)
    runs = count_pipeline_runs(monkeypatch)
    for direction in ("backward", "forward"):
        for text in ('{app="api"} |= "failover"', '{app="api"}'):
            check_select(store, records, text, limit=5, direction=direction)
    assert runs[0] < 100


# --- tenants, labels, series -------------------------------------------------------------


def test_tenants_are_separate(store: LogStore) -> None:
    mine = [rec(1, "mine failover", API_A, {"trace_id": T1}, tenant="x")]
    theirs = [
        rec(2, "theirs failover", API_A, {"trace_id": T1}, tenant="y"),
        rec(3, "theirs only", DB_A, tenant="y"),
    ]
    store.push(mine + theirs)
    for text in ('{app=~".+"}', '{app="api"} |= "failover"', f'{{app="api"}} | trace_id="{T1}"'):
        check_select(store, mine + theirs, text, tenant="x")
        assert [
            e.line
            for _, e in store.select("x", log_query(text), start_ns=0, end_ns=10 * S, limit=10)
        ] == ["mine failover"]
    assert store.labels("x", start_ns=0, end_ns=10 * S) == ["app", "site"]
    assert store.label_values("x", "app", start_ns=0, end_ns=10 * S) == ["api"]
    assert store.series("x", [log_query('{app=~".+"}')], start_ns=0, end_ns=10 * S) == [API_A]
    assert store.select("z", log_query('{app=~".+"}'), start_ns=0, end_ns=10 * S, limit=9) == []
    assert list(store.entries("z", log_query('{app=~".+"}'), start_ns=0, end_ns=10 * S)) == []


def test_labels_values_and_series_of_streams_with_lines_in_the_range(store: LogStore) -> None:
    store.push([rec(1, "a", API_A), rec(5, "b", API_B), rec(9, "c", GW_A), rec(9.5, "d", DB_A)])
    assert store.labels("fake", start_ns=0, end_ns=100 * S) == ["app", "level", "site"]
    assert store.labels("fake", start_ns=2 * S, end_ns=9 * S) == ["app", "site"]  # end excluded
    assert store.labels("fake", start_ns=20 * S, end_ns=30 * S) == []
    assert store.label_values("fake", "app", start_ns=0, end_ns=100 * S) == ["api", "api-gw", "db"]
    assert store.label_values("fake", "site", start_ns=4 * S, end_ns=6 * S) == ["b"]
    assert store.label_values("fake", "level", start_ns=0, end_ns=100 * S) == ["warn"]
    assert store.label_values("fake", "nope", start_ns=0, end_ns=100 * S) == []
    selected = store.label_values(
        "fake", "site", start_ns=0, end_ns=100 * S, query=log_query('{app="api"}')
    )
    assert selected == ["a", "b"]
    found = store.series(
        "fake",
        [log_query('{app="api"}'), log_query('{site="a"} |= "x"'), log_query('{app="db"}')],
        start_ns=0,
        end_ns=9 * S,
    )
    assert found == [API_A, API_B]
    with pytest.raises(ValueError, match="selector"):
        store.series("fake", [], start_ns=0, end_ns=1)


# --- spans --------------------------------------------------------------------------------


def span(span_id: str, start_ns: int, **changes: Any) -> SpanRecord:
    fields: dict[str, Any] = {
        "tenant": "fake",
        "trace_id": T1,
        "span_id": span_id,
        "parent_span_id": "",
        "name": f"span {span_id}",
        "kind": "server",
        "start_ns": start_ns,
        "end_ns": start_ns + 5,
        "service": "router",
    }
    fields.update(changes)
    return SpanRecord(**fields)


def test_trace_round_trip(store: LogStore) -> None:
    child = span(
        "00f067aa0ba902b7",
        20,
        parent_span_id="a3ce929d0e0e4736",
        kind="consumer",
        attributes={"s": "text", "i": 7, "f": 1.5, "whole": 2.0, "b": True, "ü": "ß"},
        resource={"service.name": "router", "bfm.site": "a", "pid": 123},
        status="error",
        status_message="refused: stale epoch",
        events=(SpanEvent(21, "retry", {"attempt": 2}), SpanEvent(22, "gave up")),
        links=(SpanLink(T2, "1111111111111111", {"bfm.link": "decision"}),),
    )
    root = span("a3ce929d0e0e4736", 10, end_ns=40)
    other_trace = span("2222222222222222", 5, trace_id=T2)
    other_tenant = span("3333333333333333", 1, tenant="y")
    assert store.push_spans([child, root, other_trace, other_tenant]) == 4
    assert store.trace("fake", T1) == [root, child]
    assert store.trace("y", T1) == [other_tenant]
    assert store.trace("fake", "ffffffffffffffffffffffffffffffff") == []
    renamed = span("a3ce929d0e0e4736", 10, end_ns=40, name="renamed")
    store.push_spans([renamed])  # an exporter's retry replaces, never duplicates
    assert store.trace("fake", T1) == [renamed, child]
    assert store.stats().spans == 4
    with pytest.raises(ValueError, match="trace_id"):
        store.push_spans([span("4444444444444444", 1, trace_id="")])


# --- retention ----------------------------------------------------------------------------


def test_retention_by_age(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    store = LogStore(tmp_path / "logs.db", retention_s=100, wall_clock=clock)
    records = [rec(800 + i, f"line {i} failover", (API_A, DB_A)[i % 2]) for i in range(200)]
    records.append(rec(850.5, "late arrival", API_B))
    store.push(records)
    store.push_spans([span("1111111111111111", 899 * S), span("2222222222222222", 900 * S)])
    result = store.enforce_retention()
    kept = [r for r in records if r.ts_ns >= 900 * S]
    assert (result.lines_deleted, result.spans_deleted, result.reason) == (101, 1, "age")
    assert store.stats().lines == len(kept) == 100
    assert store.stats().oldest_ts_ns == 900 * S
    for text in ('{app=~".+"}', '{app=~".+"} |= "failover"', '{app="db"}'):
        check_select(store, kept, text, limit=1000)
        check_select(store, kept, text, limit=3, direction="forward")
    assert store.labels("fake", start_ns=0, end_ns=10**13) == ["app", "site"]
    assert [s.span_id for s in store.trace("fake", T1)] == ["2222222222222222"]
    assert store.enforce_retention().reason == "none"
    clock.now_s = 2000.0
    assert store.enforce_retention().lines_deleted == 100
    assert store.stats().lines == 0
    assert store_schema.fts_parts(store._writer) == set()  # partitions went with the lines
    store.push([rec(1950, "after a gap")])
    check_select(store, [rec(1950, "after a gap")], '{app="api"} |= "gap"')
    store.close()


def test_retention_by_disk_budget_deletes_the_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_schema, "CHUNK_LINES", 64)
    budget = 600_000
    store = LogStore(
        tmp_path / "logs.db", max_disk_bytes=budget, retention_s=9000, wall_clock=Clock(9000.0)
    )
    words = " ".join(f"w{i}" for i in range(40))
    records = [rec(i, f"{i} {words}", (API_A, DB_A)[i % 2]) for i in range(3000)]
    records[100:120] = [rec(5000 + i, f"future {i}", API_B) for i in range(20)]  # out of order
    for start in range(0, len(records), 500):
        store.push(records[start : start + 500])
    store.push_spans([span(f"{i:016x}", i * S) for i in range(100)])
    before = store.stats()
    assert before.disk_bytes > budget
    result = store.enforce_retention()
    after = store.stats()
    assert result.reason == "disk"
    assert result.bytes_before >= before.disk_bytes - 100_000
    assert result.bytes_after == after.disk_bytes <= budget
    kept = sorted(r.ts_ns for r in records)[result.lines_deleted :]
    assert after.lines == len(kept) and after.oldest_ts_ns == kept[0]  # the oldest went
    # and not much more than needed: full-text space comes back a partition (256 lines
    # here) at a time, so up to one partition's worth more than the budget asks for goes
    assert after.lines > 0.3 * len(records)
    kept_records = [r for r in records if r.ts_ns >= kept[0]]
    check_select(store, kept_records, '{app=~".+"} |= "w39"', limit=10)
    check_select(store, kept_records, '{app=~".+"}', limit=10, direction="forward")
    newest_deleted_ns = sorted(r.ts_ns for r in records)[result.lines_deleted - 1]
    for s in store.trace("fake", T1):  # spans went by the same cutoff as lines
        assert s.end_ns > newest_deleted_ns
    assert result.spans_deleted == sum(1 for i in range(100) if i * S + 5 <= newest_deleted_ns)
    assert store.enforce_retention().reason == "none"
    store.close()


# --- failures, reopening, bad input ------------------------------------------------------


def test_full_disk_raises_store_full_and_keeps_what_was_stored(store: LogStore) -> None:
    store.push(LINES[:10])
    conn = store._writer
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = [rec(100 + i, "x" * 2000, {"app": "new", "site": "z"}) for i in range(50)]
    with pytest.raises(StoreFull, match="full"):
        store.push(big)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check_select(store, LINES[:10], '{app=~".+"}')
    assert store.label_values("fake", "app", start_ns=0, end_ns=10**13) == ["api", "api-gw", "db"]
    conn.execute("PRAGMA max_page_count = 1073741823")
    other = [rec(200, "after the disk was freed", {"app": "other", "site": "q"})]
    assert store.push(other) == 1
    check_select(store, LINES[:10] + other, '{app=~".+"}')
    assert store.stats().lines == 11


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "logs.db"
    with LogStore(path) as first:
        first.push(LINES[:30])
        first.push_spans([span("1111111111111111", 5)])
    with LogStore(path) as second:
        check_select(second, LINES[:30], '{app=~".+"} |= "failover"')
        second.push(LINES[30:])
        for text in QUERIES[:6]:
            check_select(second, LINES, text)
        assert second.stats().lines == len(LINES)
        assert [s.span_id for s in second.trace("fake", T1)] == ["1111111111111111"]


def test_unopenable_paths_name_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "logs.db"
    with pytest.raises(LogStoreError, match=r"no/such/logs\.db.*create it"):
        LogStore(missing)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LogStoreError, match=r"junk\.db.*not an SQLite database"):
        LogStore(junk)
    store = LogStore(tmp_path / "ok.db")
    store.close()
    with pytest.raises(LogStoreError, match="closed"):
        store.push(LINES[:1])


def test_a_file_with_other_chunk_sizes_is_refused(tmp_path: Path) -> None:
    LogStore(tmp_path / "logs.db").close()
    with sqlite3.connect(tmp_path / "logs.db") as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'chunk_lines'")
    conn.close()
    with pytest.raises(LogStoreError, match="chunk_lines 99"):
        LogStore(tmp_path / "logs.db")


BAD: list[tuple[Callable[[], LogRecord], str]] = [
    (lambda: LogRecord("fake", {}, 1, "x"), "at least one label"),
    (lambda: LogRecord("fake", {"app": 3}, 1, "x"), "int value"),  # type: ignore[dict-item]
    (lambda: LogRecord("fake", {"app": ""}, 1, "x"), "empty value"),
    (lambda: LogRecord("fake", {"a-b": "x"}, 1, "x"), "invalid label name"),
    (lambda: LogRecord("", API_A, 1, "x"), "tenant"),
    (lambda: LogRecord("fake", API_A, True, "x"), "integer"),
    (lambda: LogRecord("fake", API_A, 2**63, "x"), "64-bit"),
    (lambda: LogRecord("fake", API_A, 1, b"x"), "bytes"),  # type: ignore[arg-type]
    (lambda: LogRecord("fake", API_A, 1, "bad \ud800"), "Unicode"),
    (lambda: LogRecord("fake", API_A, 1, "x", {"k": 1}), "metadata k"),  # type: ignore[dict-item]
]


@pytest.mark.parametrize(("make", "problem"), BAD)
def test_bad_records_are_refused_and_nothing_is_stored(
    store: LogStore, make: Callable[[], LogRecord], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        store.push([rec(1, "good"), make()])
    assert store.stats().lines == 0
    assert store.push([]) == 0


def test_concurrent_pushes_and_queries(store: LogStore) -> None:
    errors: list[BaseException] = []

    def pusher(n: int) -> None:
        try:
            for i in range(20):
                store.push([rec(i, f"t{n} line {i} failover", API_A) for _ in range(5)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(30):
                found = store.select(
                    "fake",
                    log_query('{app="api"} |= "failover"'),
                    start_ns=0,
                    end_ns=S * 99,
                    limit=7,
                )
                stamps = [e.ts_ns for _, e in found]
                assert len(found) <= 7 and stamps == sorted(stamps, reverse=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.stats().lines == 3 * 20 * 5
