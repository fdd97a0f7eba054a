"""The trace timeline (pure): one order for spans, events and log lines; sites and
components read from resources, JSON fields and labels; span links followed one hop."""

from __future__ import annotations

import json

from support.logstore_data import span_record

from bfm_observe.logstore.loki_answers import LogLine
from bfm_observe.logstore.records import SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.timeline import (
    build_timeline,
    describe_line,
    format_duration_ns,
    linked_trace_ids,
    observed_sites,
)

MSG = "4bf92f3577b34da6a3ce929d0e0e4736"  # a delayed message's trace
DECISION = "0af7651916cd43dd8448eb211c80319c"  # the failover decision it links to
UPSTREAM = "11111111111111111111111111111111"  # linked from DECISION only: two hops away
OTHER = "22222222222222222222222222222222"
MS = 1_000_000


def _span(
    trace_id: str,
    span_id: str,
    start_ms: int,
    end_ms: int,
    *,
    name: str = "work",
    service: str = "router",
    site: str = "a",
    links: tuple[SpanLink, ...] = (),
    events: tuple[SpanEvent, ...] = (),
    status: str = "unset",
    status_message: str = "",
) -> SpanRecord:
    return span_record(
        trace_id,
        span_id,
        start_ns=start_ms * MS,
        end_ns=end_ms * MS,
        name=name,
        service=service,
        site=site,
        status=status,
        status_message=status_message,
        events=events,
        links=links,
    )


def _log(
    ts_ms: int, msg: str, trace_id: str, *, site: str = "a", component: str = "router"
) -> LogLine:
    doc = {"ts": "x", "level": "info", "logger": "bfm", "msg": msg, "site": site}
    doc |= {"component": component, "trace_id": trace_id, "span_id": "00f067aa0ba902b7"}
    labels = {"site": site, "component": component, "level": "info"}
    return LogLine(labels, ts_ms * MS, json.dumps(doc), {"trace_id": trace_id})


SPANS = [
    _span(MSG, "a000000000000001", 100, 400, name="route", service="router", site="a"),
    _span(
        MSG,
        "a000000000000002",
        150,
        390,
        name="deliver",
        service="eap",
        site="b",
        links=(SpanLink(DECISION, "d000000000000001"),),
        status="error",
        status_message="waited for failover",
    ),
    _span(
        DECISION,
        "d000000000000001",
        50,
        300,
        name="failover decision",
        service="controller",
        site="w",
        events=(SpanEvent(200 * MS, "fence", {"site": "a", "epoch": 7}),),
        links=(SpanLink(UPSTREAM, "e000000000000001"),),
    ),
    _span(UPSTREAM, "e000000000000001", 10, 20, service="prober", site="a"),
    _span(OTHER, "f000000000000001", 120, 130, service="ledger", site="b"),
]


def test_linked_trace_ids_follow_links_one_hop_both_ways() -> None:
    assert linked_trace_ids(SPANS, MSG) == [DECISION]
    # From the decision: the trace it links to, and the message trace linking to it.
    assert linked_trace_ids(SPANS, DECISION) == [MSG, UPSTREAM]
    assert linked_trace_ids(SPANS, OTHER) == []
    assert linked_trace_ids(SPANS, MSG.upper()) == [DECISION]


def test_timeline_is_one_time_order_of_spans_events_and_lines() -> None:
    lines = [
        _log(250, "delayed until the new owner takes shard 3", MSG, site="b", component="eap"),
        _log(120, "routing message", MSG),
        _log(210, "fenced site a", DECISION, site="w", component="controller"),
    ]
    rows = build_timeline(SPANS, lines, focus_trace_id=MSG)
    assert [(r.ts_ns // MS, r.kind, r.site, r.component) for r in rows] == [
        (50, "span", "w", "controller"),
        (100, "span", "a", "router"),
        (120, "log", "a", "router"),
        (150, "span", "b", "eap"),
        (200, "event", "w", "controller"),
        (210, "log", "w", "controller"),
        (250, "log", "b", "eap"),
        (300, "end", "w", "controller"),
        (390, "end", "b", "eap"),
        (400, "end", "a", "router"),
    ]
    assert [r.linked for r in rows] == [r.trace_id == DECISION for r in rows]
    assert {r.trace_id for r in rows} == {MSG, DECISION}  # not UPSTREAM (two hops), not OTHER
    deliver = rows[3]
    assert deliver.text == ("deliver (240.0 ms) ERROR: waited for failover -> links to 0af76519")
    assert deliver.level == "error" and deliver.short_trace_id == "4bf92f35"
    assert rows[4].text == "fence site=a epoch=7"
    assert rows[6].text == "delayed until the new owner takes shard 3"
    assert rows[6].level == "info" and rows[6].span_id == "00f067aa0ba902b7"


def test_rows_at_the_same_instant_order_start_event_log_end() -> None:
    spans = [
        _span(MSG, "a000000000000001", 100, 200, events=(SpanEvent(200 * MS, "done"),)),
        _span(MSG, "a000000000000002", 200, 300, name="next"),
    ]
    rows = build_timeline(spans, [_log(200, "between", MSG)], focus_trace_id=MSG)
    assert [(r.ts_ns // MS, r.kind) for r in rows] == [
        (100, "span"),
        (200, "span"),
        (200, "event"),
        (200, "log"),
        (200, "end"),
        (300, "end"),
    ]


def test_lines_of_unrelated_traces_are_dropped_and_duplicates_shown_once() -> None:
    line = _log(120, "once", MSG)
    unrelated = _log(130, "not this trace", OTHER)
    no_id = LogLine({"site": "b", "component": "eap"}, 140 * MS, "plain text line")
    rows = build_timeline([], [line, line, unrelated, no_id], focus_trace_id=MSG)
    assert [(r.text, r.site, r.trace_id, r.linked) for r in rows] == [
        ("once", "a", MSG, False),
        ("plain text line", "b", "", False),
    ]


def test_zero_length_spans_have_no_end_row() -> None:
    rows = build_timeline([_span(MSG, "a000000000000001", 5, 5)], [], focus_trace_id=MSG)
    assert [(r.kind, r.text) for r in rows] == [("span", "work (0.000 ms)")]


def test_describe_line_prefers_the_lines_own_fields_then_metadata_then_labels() -> None:
    doc = {
        "ts": "2024-05-01T12:00:00.000Z",
        "level": "WARNING",
        "logger": "failover.runtime",
        "msg": "took over",
        "site": "w",
        "component": "eap",
        "shards": [1, 2],
        "reason": "site a down",
        "error": "Traceback (most recent call last):\n  ...\nTimeoutError: lease expired\n",
    }
    labels = {"site": "w", "component": "controller", "level": "warning"}
    view = describe_line(LogLine(labels, 1, json.dumps(doc), {"trace_id": MSG.upper()}))
    assert (view.site, view.component, view.level, view.logger) == (
        "w",
        "eap",
        "warning",
        "failover.runtime",
    )
    assert view.trace_id == MSG
    assert (
        view.msg
        == 'took over shards=[1,2] reason="site a down" error="TimeoutError: lease expired"'
    )
    merged = LogLine({"site": "b", "component": "router", "trace_id": MSG}, 1, "not json {")
    raw = describe_line(merged)
    assert (raw.site, raw.component, raw.msg, raw.trace_id, raw.level) == (
        "b",
        "router",
        "not json {",
        MSG,
        "",
    )


def test_format_duration_ns() -> None:
    assert format_duration_ns(42_000) == "0.042 ms"
    assert format_duration_ns(12_345_678) == "12.3 ms"
    assert format_duration_ns(2_345_000_000) == "2.345 s"


def test_a_site_the_decision_observed_shows_its_last_lines_as_context() -> None:
    observed = SpanEvent(40 * MS, "site-down", {"bfm.site": "a", "bfm.component": "*"})
    detect = _span(DECISION, "d1", 40, 45, name="bfm.detect", service="bfm-site", site="w")
    detect = SpanRecord(**{**detect.__dict__, "events": (observed,)})
    message = _span(
        MSG, "m1", 30, 60, name="bfm.apply", site="b", links=(SpanLink(DECISION, "d1"),)
    )
    spans = [message, detect]
    assert observed_sites(spans, [MSG, DECISION]) == {"a": 40 * MS}
    assert observed_sites(spans, [MSG]) == {}
    last_words = _log(20, "site a: agent renewed", OTHER, site="a")
    rows = build_timeline(spans, [], focus_trace_id=MSG, context=[last_words])
    context = [r for r in rows if r.kind == "context"]
    assert [(r.site, r.text) for r in context] == [("a", "site a: agent renewed")]
    assert rows[0] == context[0]  # before everything else: it was said first
    # without context, a line of another trace is left out
    assert all(r.kind != "context" for r in build_timeline(spans, [last_words], focus_trace_id=MSG))
