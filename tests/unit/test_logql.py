"""The LogQL subset of the embedded log store, against Loki's documented semantics.

Expected results are written from Loki's documentation:
- log queries (selectors, line filters, `| json`, label filters):
  https://grafana.com/docs/loki/latest/query/log_queries/
- metric queries (count_over_time, rate, sum by, topk):
  https://grafana.com/docs/loki/latest/query/metric_queries/
- structured metadata in label filters:
  https://grafana.com/docs/loki/latest/get-started/labels/structured-metadata/
Range windows are Prometheus' (t - range, t]:
https://prometheus.io/docs/prometheus/latest/querying/basics/#range-vector-selectors
"""

from __future__ import annotations

import contextlib
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.logstore_data import log_query, metric_query

from bfm_observe.logstore.logql import (
    Entry,
    LogQLError,
    parse,
    parse_duration,
    required_words,
    select_streams,
)
from bfm_observe.logstore.logql_eval import eval_instant, eval_log, eval_metric, eval_streams

S = 1_000_000_000
A = {"app": "api", "site": "a"}
B = {"app": "api", "site": "b"}
C = {"app": "db", "site": "a"}
D = {"app": "api-gw", "site": "a"}

LOGS = [
    Entry(1 * S, '{"level":"info","msg":"started","req":{"id":7,"path":"/a"}}', A, {}),
    Entry(2 * S, '{"level":"error","msg":"timeout","status":503}', A, {"trace_id": "t1"}),
    Entry(3 * S, "plain text error line", B, {"trace_id": "t2"}),
    Entry(4 * S, '{"level":"warn","msg":"slow query","status":200}', C, {"trace_id": "t1"}),
    Entry(5 * S, '{"level":"error","msg":"Connection refused","status":500}', D, {}),
]

ALL = '{site=~".+"}'


def seconds(
    text: str, *, direction: Literal["backward", "forward"] = "backward", limit: int = 100
) -> list[int]:
    found = eval_log(log_query(text), LOGS, limit=limit, direction=direction)
    return [entry.ts_ns // S for _, entry in found]


LOG_CASES = [
    # stream selectors: =, !=, =~, !~; regexes are fully anchored
    ('{app="api"}', [3, 2, 1]),
    ('{app!="api", site=~".+"}', [5, 4]),  # a selector needs a non-empty matcher
    ('{app=~"api"}', [3, 2, 1]),
    ('{app=~"pi"}', []),
    ('{app=~"api.*"}', [5, 3, 2, 1]),
    ('{app!~"api.*", site="a"}', [4]),
    ('{app="api", site="b"}', [3]),
    ('{app="api",site!="b"}', [2, 1]),
    ('{app=~"api|db", nope=""}', [4, 3, 2, 1]),  # a missing label is ""
    # line filters: |= contains, != does not contain, |~ unanchored regex, !~
    ('{site="a"} |= "error"', [5, 2]),
    (ALL + ' != "error"', [4, 1]),
    (ALL + ' |~ "time.ut"', [2]),
    (ALL + ' |~ "(?i)connection"', [5]),
    (ALL + ' !~ "error|warn"', [1]),
    (ALL + ' |= "error" != "timeout"', [5, 3]),
    (ALL + ' |= ""', [5, 4, 3, 2, 1]),
    (ALL + " |~ `\\d{3}`", [5, 4, 2]),
    # structured metadata behaves like labels in label filters
    (ALL + ' | trace_id="t1"', [4, 2]),
    (ALL + ' | trace_id=~"t.*"', [4, 3, 2]),
    (ALL + ' | trace_id=~"t"', []),  # label filter regexes are anchored too
    (ALL + ' | trace_id!="t1"', [5, 3, 1]),
    (ALL + ' | trace_id!~"t1|t2"', [5, 1]),
    # | json: extracted fields are labels; nested keys flattened with _
    (ALL + ' | json | level="error"', [5, 2]),
    (ALL + ' | json | req_path="/a"', [1]),
    (ALL + ' | json | req_id="7"', [1]),
    (ALL + ' | json | msg=~"slow"', []),
    (ALL + ' | json | msg=~"slow.*"', [4]),
    (ALL + ' | json | __error__="JSONParserErr"', [3]),
    (ALL + ' | json | __error__=""', [5, 4, 2, 1]),
    # numeric comparisons: missing label drops, lines in error pass (Loki's rule)
    (ALL + " | json | status >= 500", [5, 3, 2]),
    (ALL + ' | json | __error__="" | status >= 500', [5, 2]),
    (ALL + " | json | status == 200", [4, 3]),
    (ALL + " | json | status = 503", [3, 2]),
    (ALL + ' | json | __error__="" | status != 500', [4, 2]),
    (ALL + ' | json | __error__="" | status < 500.5', [5, 4]),
    (ALL + ' | json | __error__="" | status <= 200', [4]),
    (ALL + ' | json | __error__="" | status > 200', [5, 2]),
    # and / or / comma / space / parentheses in label filters
    (ALL + ' | json | level="error" or level="warn"', [5, 4, 2]),
    (ALL + ' | json | level="error", status > 500', [2]),
    (ALL + ' | json | level="error" and status < 501', [5]),
    (ALL + ' | json | level="error" status < 501', [5]),
    (ALL + ' | json | (level="info" or level="warn") and msg=~"s.*"', [4, 1]),
    # filters chain in any order; line filters after | json still see the raw line
    (ALL + ' | json | level="error" |= "refused"', [5]),
    (ALL + ' | trace_id="t1" | json | level="warn"', [4]),
]


@pytest.mark.parametrize(("query", "expected"), LOG_CASES)
def test_log_query_table(query: str, expected: list[int]) -> None:
    assert seconds(query) == expected


def test_limit_and_direction() -> None:
    assert seconds(ALL, limit=2) == [5, 4]
    assert seconds(ALL, limit=2, direction="forward") == [1, 2]
    with pytest.raises(ValueError, match="limit"):
        seconds(ALL, limit=0)


def test_result_labels_include_metadata_and_json_fields() -> None:
    found = eval_log(log_query('{app="api", site="a"} | json'), LOGS, limit=10)
    labels = [dict(labels) for labels, _ in found]
    assert labels == [
        {"app": "api", "site": "a", "level": "error", "msg": "timeout", "status": "503"}
        | {"trace_id": "t1"},
        {"app": "api", "site": "a", "level": "info", "msg": "started", "req_id": "7"}
        | {"req_path": "/a"},
    ]
    error = eval_log(log_query('{site="b"} | json'), LOGS, limit=10)
    assert dict(error[0][0]) == {
        "app": "api",
        "site": "b",
        "trace_id": "t2",
        "__error__": "JSONParserErr",
    }


def test_json_flattening_and_collisions() -> None:
    line = (
        '{"app":"y","a":{"b":1.50,"c":{"d":"x"}},"list":[1,2],"n":null,'
        '"ok":true,"no":false,"user-id":"u","e":""}'
    )
    entry = Entry(1, line, {"app": "x"}, {"app": "m", "span": "s"})
    ((labels, _),) = eval_log(log_query('{app="x"} | json'), [entry], limit=1)
    assert dict(labels) == {
        "app": "x",
        "app_extracted": "y",  # json field beats the metadata of the same name
        "a_b": "1.50",  # numbers kept as written
        "a_c_d": "x",
        "ok": "true",
        "no": "false",
        "user_id": "u",
        "span": "s",
    }


def test_streams_group_by_final_labels() -> None:
    streams = eval_streams(log_query('{app="api"}'), LOGS, limit=10)
    assert {labels: [e.ts_ns // S for e in es] for labels, es in streams.items()} == {
        (("app", "api"), ("site", "b"), ("trace_id", "t2")): [3],
        (("app", "api"), ("site", "a"), ("trace_id", "t1")): [2],
        (("app", "api"), ("site", "a")): [1],
    }


def test_select_streams_and_required_words() -> None:
    query = parse('{app=~"api.*", site!="b"} |= "error" != "x" |~ "a" |= "timeout" | json')
    assert select_streams(query, A)
    assert select_streams(query, D)
    assert not select_streams(query, B)
    assert not select_streams(query, C)
    assert required_words(query) == ["error", "timeout"]
    metric = parse('sum by (app) (rate({app="api"} |= "boom" [5m]))')
    assert required_words(metric) == ["boom"]
    assert select_streams(metric, A)
    assert not select_streams(metric, C)


def test_strings_follow_go_quoting() -> None:
    query = log_query('{app="a\\"b\\u00e9\\x41\\101\\n"}')
    assert query.selector[0].value == 'a"béAA\n'
    assert log_query("{app=`a\\d`}").selector[0].value == "a\\d"


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30s", 30 * S),
        ("5m", 300 * S),
        ("1h", 3600 * S),
        ("1h30m", 5400 * S),
        ("1.5h", 5400 * S),
        ("100ms", S // 10),
        ("1d", 86400 * S),
        ("5", None),
        ("", None),
        ("5x", None),
    ],
)
def test_durations(text: str, ns: int | None) -> None:
    assert parse_duration(text) == ns


# --- metric queries on a small hand-computed dataset ------------------------------------

MA = {"app": "api", "site": "a"}
MB = {"app": "api", "site": "b"}
MC = {"app": "db", "site": "a"}
METRIC_LOGS = [
    *(Entry(t * S, '{"level":"error"}', MA) for t in (10, 30, 70)),
    Entry(20 * S, '{"level":"info"}', MA),
    *(Entry(t * S, "b", MB) for t in (15, 65, 110)),
    *(Entry(t * S, "c", MC) for t in (5, 50, 55, 58)),
]
LA = (("app", "api"), ("site", "a"))
LB = (("app", "api"), ("site", "b"))
LC = (("app", "db"), ("site", "a"))
ANY = '{app=~".+"}'


def matrix(query: str) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
    result = eval_metric(
        metric_query(query), METRIC_LOGS, start_ns=60 * S, end_ns=120 * S, step_ns=30 * S
    )
    return {labels: [(t // S, v) for t, v in points] for labels, points in result.items()}


# Steps 60, 90, 120 with a 1m range: windows (0,60], (30,90], (60,120].
# A: 10 20 30 70 -> 3, 1, 1; B: 15 65 110 -> 1, 1, 2; C: 5 50 55 58 -> 4, 3, (none)
METRIC_CASES = [
    (
        'count_over_time({app="api"}[1m])',
        {LA: [(60, 3.0), (90, 1.0), (120, 1.0)], LB: [(60, 1.0), (90, 1.0), (120, 2.0)]},
    ),
    (
        "count_over_time(" + ANY + " [1m])",
        {
            LA: [(60, 3.0), (90, 1.0), (120, 1.0)],
            LB: [(60, 1.0), (90, 1.0), (120, 2.0)],
            LC: [(60, 4.0), (90, 3.0)],  # no point where the window is empty
        },
    ),
    ('rate({app="db"}[1m])', {LC: [(60, 4 / 60), (90, 3 / 60)]}),
    ('rate({app="db"}[30s])', {LC: [(60, 3 / 30)]}),  # window (30,60]: 50 55 58
    (
        "sum by (site) (count_over_time(" + ANY + "[1m]))",
        {
            (("site", "a"),): [(60, 7.0), (90, 4.0), (120, 1.0)],
            (("site", "b"),): [(60, 1.0), (90, 1.0), (120, 2.0)],
        },
    ),
    (
        "sum(count_over_time(" + ANY + "[1m])) by (app)",
        {
            (("app", "api"),): [(60, 4.0), (90, 2.0), (120, 3.0)],
            (("app", "db"),): [(60, 4.0), (90, 3.0)],
        },
    ),
    ("sum(count_over_time(" + ANY + "[1m]))", {(): [(60, 8.0), (90, 5.0), (120, 3.0)]}),
    ("sum by (nope) (count_over_time(" + ANY + "[1m]))", {(): [(60, 8.0), (90, 5.0), (120, 3.0)]}),
    (
        "topk(1, count_over_time(" + ANY + "[1m]))",
        {LB: [(120, 2.0)], LC: [(60, 4.0), (90, 3.0)]},
    ),
    (
        "topk by (site) (1, count_over_time(" + ANY + "[1m]))",
        {
            LA: [(120, 1.0)],
            LB: [(60, 1.0), (90, 1.0), (120, 2.0)],
            LC: [(60, 4.0), (90, 3.0)],
        },
    ),
    (
        "topk(1, sum by (site) (rate(" + ANY + "[1m])))",
        {(("site", "a"),): [(60, 7 / 60), (90, 4 / 60)], (("site", "b"),): [(120, 2 / 60)]},
    ),
    (
        'sum by (level) (count_over_time({app="api", site="a"} | json [1m]))',
        {
            (("level", "error"),): [(60, 2.0), (90, 1.0), (120, 1.0)],
            (("level", "info"),): [(60, 1.0)],
        },
    ),
    (
        'count_over_time({app="api"} | json | level="error" [1m])',
        {(("app", "api"), ("level", "error"), ("site", "a")): [(60, 2.0), (90, 1.0), (120, 1.0)]},
    ),
    ('count_over_time({app="api"}[1m] |= "b")', {LB: [(60, 1.0), (90, 1.0), (120, 2.0)]}),
]


@pytest.mark.parametrize(("query", "expected"), METRIC_CASES)
def test_metric_query_table(
    query: str, expected: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]
) -> None:
    got = matrix(query)
    assert {k: [t for t, _ in v] for k, v in got.items()} == {
        k: [t for t, _ in v] for k, v in expected.items()
    }
    flat = {(k, t): v for k, points in got.items() for t, v in points}
    assert flat == pytest.approx({(k, t): v for k, points in expected.items() for t, v in points})


def test_instant_query() -> None:
    query = metric_query("sum by (app) (rate(" + ANY + "[1m]))")
    assert eval_instant(query, METRIC_LOGS, 60 * S) == pytest.approx(
        {(("app", "api"),): 4 / 60, (("app", "db"),): 4 / 60}
    )
    assert eval_instant(query, METRIC_LOGS, 1000 * S) == {}


def test_metric_query_refuses_pipeline_errors() -> None:
    with pytest.raises(LogQLError, match="pipeline error: 'JSONParserErr'"):
        matrix("count_over_time(" + ANY + " | json [1m])")
    assert matrix("count_over_time(" + ANY + ' | json | __error__="" [1m])') != {}


# --- errors: the unsupported part and its offset ----------------------------------------

ERROR_CASES = [
    ('{app="a"} | logfmt', "unsupported: `| logfmt`", 10),
    ('{app="a"} | line_format "{{.msg}}"', "unsupported: `| line_format`", 10),
    ('{app="a"} | label_format x=y', "unsupported: `| label_format`", 10),
    ('{app="a"} | regexp "(?P<x>.)"', "unsupported: `| regexp`", 10),
    ('{app="a"} | pattern "<x>"', "unsupported: `| pattern`", 10),
    ('{app="a"} | json level="lvl"', "unsupported: `| json` with parameters", 10),
    ('{app="a"} |> "<_> x"', "unsupported: pattern line filter", 10),
    ('{app="a"} |= "x" or "y"', "unsupported: `or` in a line filter", 17),
    ('{app="a"} | json | latency > 10s', "unsupported: duration comparison `10s`", 29),
    ('{app="a"} | json | size > 20KB', "unsupported: bytes comparison `20KB`", 26),
    ('avg_over_time({app="a"} | unwrap x [1m])', "unsupported: range aggregation", 0),
    (
        'quantile_over_time(0.99, {app="a"} | json | unwrap latency [5m])',
        "unsupported: range aggregation `quantile_over_time`",
        0,
    ),
    ('count_over_time({app="a"} | unwrap x [1m])', "unsupported: `| unwrap`", 26),
    ('bytes_rate({app="a"}[1m])', "unsupported: range aggregation `bytes_rate`", 0),
    ('avg(rate({app="a"}[1m]))', "unsupported: aggregation `avg`", 0),
    ('bottomk(1, rate({app="a"}[1m]))', "unsupported: aggregation `bottomk`", 0),
    ('sum without (app) (rate({app="a"}[1m]))', "unsupported: `without`", 4),
    ('sum(rate({app="a"}[1m])) without (app)', "unsupported: `without`", 25),
    ('count_over_time({app="a"}[1m]) by (x)', "unsupported: grouping `by`", 31),
    ('rate({app="a"}[1m]) / 2', "unsupported: binary operator `/`", 20),
    ('rate({app="a"}[1m] offset 5m)', "unsupported: `offset`", 19),
    ('label_replace(rate({app="a"}[1m]), "a", "b", "c", "d")', "unsupported: function", 0),
    ('{app="a"', "expected `}` at 8, found end of query", 8),
    ('{app.name="a"}', "invalid label name `app.name` at 1", 1),
    ("{}", "expected a label name at 1", 1),
    ('{app~"a"}', "unexpected character `~` at 4", 4),
    ('{app>"a"}', "expected a matcher", 4),
    ("{app=a}", "expected a quoted string at 5", 5),
    ('{app=~".*"}', "matches every stream", 0),
    ('{app="", x!="y"}', "matches every stream", 0),
    ('{app!="api"}', "matches every stream", 0),
    ('{app="a"} |~ "("', "invalid regular expression", 13),
    ('{app="a"} | json | x=~"["', "invalid regular expression", 22),
    ('{app="a"} |= "x', "unterminated string", 13),
    ('{app="a\\q"}', "invalid escape", 7),
    ('rate({app="a"})', "expected a range such as `[5m]`", 14),
    ('rate({app="a"}[5x])', "invalid duration `5x`", 15),
    ('rate({app="a"}[1m] [1m])', "a second range", 19),
    ('topk(0, rate({app="a"}[1m]))', "expected a positive integer k", 5),
    ('sum({app="a"})', "a log query is not a vector", 4),
    ('app="a"', "expected a metric query", 0),
    ('{app="a"} | json | level=', "expected a number or a quoted string", 25),
    ('{app="a"} | json | x > "1"', "expected a number", 23),
    ('{app="a"} }', "unexpected `}` at 10", 10),
    ('{app="a"} # note', "unsupported: comment", 10),
    ("sum(" * 100, "nested too deeply", None),
]


@pytest.mark.parametrize(("query", "message", "position"), ERROR_CASES)
def test_errors_name_the_part_and_offset(query: str, message: str, position: int | None) -> None:
    with pytest.raises(LogQLError) as caught:
        parse(query)
    assert message in str(caught.value)
    if position is not None:
        assert caught.value.position == position
        assert f"at {position}" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unsupported_error_lists_the_subset() -> None:
    with pytest.raises(LogQLError, match=r"\(supported: stream selectors"):
        parse('{app="a"} | logfmt')


# --- properties -------------------------------------------------------------------------

FRAGMENTS = [
    "{", "}", "(", ")", "[", "]", ",", "=", "!=", "=~", "!~", "|=", "|~", "|", ">", "==",
    "app", "level", "json", "logfmt", "sum", "topk", "by", "without", "rate", "and", "or",
    "count_over_time", '"a"', '".*"', '"("', "`x`", "5m", "1", "0", "-", "1h30m", "\\",
    '"', "`", "offset", "unwrap", "1e", "20KB", "10s",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=60), st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join))
)
def test_parse_raises_only_logql_errors(text: str) -> None:
    with contextlib.suppress(LogQLError):
        parse(text)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**12),
            st.text(max_size=20),
            st.sampled_from(["api", "db", "api-gw"]),
            st.sampled_from(["a", "b"]),
        ),
        max_size=30,
    ),
    st.sampled_from(["api", "db", "api-gw"]),
)
def test_no_filters_returns_every_entry_of_matching_streams(
    rows: list[tuple[int, str, str, str]], app: str
) -> None:
    entries = [Entry(ts, line, {"app": a, "site": s}) for ts, line, a, s in rows]
    found = eval_log(log_query(f'{{app="{app}"}}'), entries, limit=1000)
    assert sorted((e.ts_ns, e.line) for _, e in found) == sorted(
        (e.ts_ns, e.line) for e in entries if e.labels["app"] == app
    )
    assert [e.ts_ns for _, e in found] == sorted((e.ts_ns for _, e in found), reverse=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 600), max_size=40), st.integers(1, 300))
def test_count_over_time_counts_the_half_open_window(stamps: list[int], range_s: int) -> None:
    entries = [Entry(t * S, "x", {"app": "api"}) for t in stamps]
    query = metric_query(f'sum(count_over_time({{app="api"}}[{range_s}s]))')
    at = 300
    expected = sum(1 for t in stamps if at - range_s < t <= at)
    assert eval_instant(query, entries, at * S) == ({(): float(expected)} if expected else {})
