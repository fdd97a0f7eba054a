"""The Loki client against a double of Loki's and Tempo's documented HTTP APIs: every
method, every answer shape, every error mapping, and the headers the server sees."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from support.loki_api_double import LokiApiDouble, matrix_data, vector_data

from bfm_observe.logstore.client import (
    LokiAuthError,
    LokiClient,
    LokiClientError,
    LokiQueryError,
    LokiResponseError,
    LokiServerError,
    LokiUnreachable,
)
from bfm_observe.logstore.loki_answers import parse_query_data
from bfm_observe.logstore.records import LogRecord, SpanEvent, SpanLink, SpanRecord

QUERY = '{site=~".+"} |= "failover"'
T0_NS = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
LINKED = "0af7651916cd43dd8448eb211c80319c"


def _record(ts_ns: int, line: str, site: str = "a", **metadata: str) -> LogRecord:
    labels = {"site": site, "component": "router", "level": "info", "namespace": "hemisphere"}
    return LogRecord("fake", labels, ts_ns, line, metadata)


RECORDS = [
    _record(T0_NS + 2, "second", trace_id=TRACE, span_id="00f067aa0ba902b7"),
    _record(T0_NS + 1, "first", site="b"),
    _record(T0_NS + 3, "third", trace_id=TRACE),
]


@pytest.fixture
def double() -> Iterator[LokiApiDouble]:
    with LokiApiDouble() as server:
        yield server


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_query_range_sends_the_documented_parameters(double: LokiApiDouble) -> None:
    double.answer_logs(QUERY, RECORDS)
    with LokiClient(double.url + "/") as client:
        client.query_range(QUERY, start_ns=T0_NS, end_ns=T0_NS + 10, limit=7, step_s=0.5)
    seen = double.seen[-1]
    assert seen.path == "/loki/api/v1/query_range"
    assert {k: v[0] for k, v in seen.params.items()} == {
        "query": QUERY,
        "start": str(T0_NS),
        "end": str(T0_NS + 10),
        "limit": "7",
        "direction": "backward",
        "step": "0.5",
    }
    assert seen.headers["x-loki-response-encoding-flags"] == "categorize-labels"
    assert "authorization" not in seen.headers and "x-scope-orgid" not in seen.headers


def test_lines_come_merged_across_streams_in_the_requested_direction(
    double: LokiApiDouble,
) -> None:
    double.answer_logs(QUERY, RECORDS)
    with LokiClient(double.url) as client:
        newest = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2)
        oldest = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2, direction="forward")
        two = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2, limit=2)
    assert newest.result_type == "streams"
    assert [e.line for e in newest.lines] == ["third", "second", "first"]
    assert [e.line for e in oldest.lines] == ["first", "second", "third"]
    assert [e.line for e in two.lines] == ["third", "second"]
    assert newest.lines[2].labels["site"] == "b" and newest.lines[2].ts_ns == T0_NS + 1


def test_categorized_answer_keeps_metadata_apart_from_stream_labels(
    double: LokiApiDouble,
) -> None:
    double.answer_logs(QUERY, RECORDS)
    with LokiClient(double.url) as client:
        second = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2).lines[1]
    assert second.metadata == {"trace_id": TRACE, "span_id": "00f067aa0ba902b7"}
    assert "trace_id" not in second.labels
    assert second.value_of("trace_id") == TRACE and second.value_of("site") == "a"


def test_default_encoding_merges_metadata_into_the_labels() -> None:
    with LokiApiDouble(honours_categorize=False) as double:
        double.answer_logs(QUERY, RECORDS)
        with LokiClient(double.url) as client:
            third = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2).lines[0]
    assert third.metadata == {}
    assert third.labels["trace_id"] == TRACE
    assert third.value_of("trace_id") == TRACE


def test_an_optional_plain_third_value_element_is_the_metadata() -> None:
    with LokiApiDouble(encoding="third", honours_categorize=False) as double:
        double.answer_logs(QUERY, RECORDS)
        with LokiClient(double.url) as client:
            lines = client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2).lines
    assert [dict(e.metadata) for e in lines] == [
        {"trace_id": TRACE},
        {"trace_id": TRACE, "span_id": "00f067aa0ba902b7"},
        {},
    ]
    assert "trace_id" not in lines[0].labels


def test_categorized_third_element_is_recognised_without_encoding_flags() -> None:
    value = ["5", "x", {"structuredMetadata": {"trace_id": TRACE}, "parsed": {"msg": "m"}}]
    data = {"resultType": "streams", "result": [{"stream": {"site": "a"}, "values": [value]}]}
    (line,) = parse_query_data(data, newest_first=True).lines
    assert line.metadata == {"trace_id": TRACE} and line.parsed == {"msg": "m"}


def test_instant_query_and_metric_results(double: LokiApiDouble) -> None:
    double.answer_data("sum(rate(x[1m]))", vector_data([({"site": "a"}, (1714564800.5, "2.5"))]))
    double.answer_data(
        "count_over_time(x[1m])",
        matrix_data([({"site": "b"}, [(1714564800, "1"), (1714564860.25, "NaN")])]),
    )
    with LokiClient(double.url) as client:
        vector = client.query("sum(rate(x[1m]))", at_ns=T0_NS, limit=5, direction="forward")
        matrix = client.query_range("count_over_time(x[1m])", start_ns=0, end_ns=T0_NS)
    instant = double.seen[0]
    assert instant.path == "/loki/api/v1/query"
    assert instant.params["time"] == [str(T0_NS)] and instant.params["limit"] == ["5"]
    assert vector.result_type == "vector"
    assert vector.series[0].metric == {"site": "a"}
    assert vector.series[0].points == ((T0_NS + 500_000_000, 2.5),)
    assert matrix.result_type == "matrix"
    (first, second) = matrix.series[0].points
    assert first == (T0_NS, 1.0)
    assert second[0] == T0_NS + 60_250_000_000 and second[1] != second[1]  # NaN


def test_labels_values_and_series(double: LokiApiDouble) -> None:
    double.label_names = ["component", "site"]
    double.label_values["site"] = ["a", "b", "w"]
    double.series_sets = [{"site": "a", "component": "router"}]
    with LokiClient(double.url) as client:
        assert client.labels(T0_NS, T0_NS + 5) == ["component", "site"]
        assert client.label_values("site", query='{component="router"}') == ["a", "b", "w"]
        assert client.series(['{site="a"}', '{site="b"}'], start_ns=1) == [
            {"site": "a", "component": "router"}
        ]
    labels, values, series = double.seen
    assert labels.path == "/loki/api/v1/labels"
    assert labels.params == {"start": [str(T0_NS)], "end": [str(T0_NS + 5)]}
    assert values.path == "/loki/api/v1/label/site/values"
    assert values.params == {"query": ['{component="router"}']}
    assert series.params == {"match[]": ['{site="a"}', '{site="b"}'], "start": ["1"]}


def test_ready() -> None:
    with LokiApiDouble() as double, LokiClient(double.url) as client:
        assert client.ready()
        double.fail("/ready", 503, "Ingester not ready")
        assert not client.ready()
    with LokiClient(_closed_port_url(), timeout_s=1) as client:
        assert not client.ready()


def test_token_and_tenant_are_sent_and_required() -> None:
    with LokiApiDouble(token="s3cret", tenant="team-a") as double:
        double.answer_logs(QUERY, RECORDS)
        with LokiClient(double.url, token="s3cret", tenant="team-a") as client:
            assert len(client.query_range(QUERY, start_ns=0, end_ns=T0_NS * 2).lines) == 3
        assert double.seen[-1].headers["authorization"] == "Bearer s3cret"
        assert double.seen[-1].headers["x-scope-orgid"] == "team-a"
        client = LokiClient(double.url, token="s3cret")
        with client, pytest.raises(LokiAuthError) as no_tenant:
            client.labels()
        assert no_tenant.value.status == 401
        assert "no org id" in str(no_tenant.value) and "tenant" in str(no_tenant.value)
        double.fail("/loki/api/v1/labels", 403, "forbidden")
        client = LokiClient(double.url, token="s3cret", tenant="team-a")
        with client, pytest.raises(LokiAuthError) as denied:
            client.labels()
        assert denied.value.status == 403


def test_a_400_carries_lokis_message(double: LokiApiDouble) -> None:
    message = "parse error at line 1, col 7: syntax error: unexpected IDENTIFIER"
    double.fail("{site=~", 400, message + "\n")
    with LokiClient(double.url) as client, pytest.raises(LokiQueryError) as refused:
        client.query_range("{site=~", start_ns=0, end_ns=1)
    assert refused.value.message == message
    assert str(refused.value) == message


def test_a_prometheus_style_error_body_is_a_query_error(double: LokiApiDouble) -> None:
    double.fail("x", 200, {"status": "error", "errorType": "bad_data", "error": "invalid step"})
    with LokiClient(double.url) as client, pytest.raises(LokiQueryError, match="invalid step"):
        client.query("x")


def test_server_failure_is_unreachable_with_status_and_body(double: LokiApiDouble) -> None:
    double.fail("/loki/api/v1/query_range", 502, "upstream connect error " + "x" * 500)
    with LokiClient(double.url) as client, pytest.raises(LokiServerError) as failed:
        client.query_range(QUERY, start_ns=0, end_ns=1)
    assert isinstance(failed.value, LokiUnreachable)
    assert failed.value.status == 502
    assert failed.value.body_head.startswith("upstream connect error")
    assert len(failed.value.body_head) <= 203
    assert "502" in str(failed.value) and double.url in str(failed.value)


def test_an_answer_no_loki_gives_is_a_response_error(double: LokiApiDouble) -> None:
    client = LokiClient(double.url + "/not-loki")
    with client, pytest.raises(LokiResponseError, match=r"404 .*URL of a Loki"):
        client.labels()
    double.fail("/loki/api/v1/labels", 200, "<html>hello</html>")
    with LokiClient(double.url) as client, pytest.raises(LokiResponseError, match="not JSON"):
        client.labels()
    double.errors.clear()
    double.answer_data("weird", {"resultType": "streams", "result": [{"stream": {}}]})
    with LokiClient(double.url) as client, pytest.raises(LokiResponseError, match="values"):
        client.query("weird")


def test_connection_refused_is_unreachable_naming_the_url() -> None:
    url = _closed_port_url()
    with LokiClient(url, timeout_s=2) as client, pytest.raises(LokiUnreachable) as refused:
        client.query_range(QUERY, start_ns=0, end_ns=1)
    assert url in str(refused.value)
    assert "connection refused" in str(refused.value)
    assert "running" in str(refused.value)


def test_a_server_that_never_answers_times_out_as_unreachable(double: LokiApiDouble) -> None:
    double.hang = True
    with LokiClient(double.url, timeout_s=0.3) as client, pytest.raises(LokiUnreachable) as hung:
        client.labels()
    assert "did not answer within 0.3 s" in str(hung.value)
    assert isinstance(hung.value, LokiClientError)


def _span(trace_id: str, span_id: str, **overrides: object) -> SpanRecord:
    fields: dict[str, object] = {
        "tenant": "fake",
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": "",
        "name": "route",
        "kind": "server",
        "start_ns": T0_NS,
        "end_ns": T0_NS + 5_000_000,
        "service": "router",
        "resource": {"bfm.site": "a", "service.namespace": "hemisphere"},
    }
    fields.update(overrides)
    return SpanRecord(**fields)  # type: ignore[arg-type]


def test_trace_fetches_tempo_json_and_keeps_links_and_events(double: LokiApiDouble) -> None:
    root = _span(TRACE, "00f067aa0ba902b7", attributes={"shard": 3})
    child = _span(
        TRACE,
        "b7ad6b7169203331",
        parent_span_id="00f067aa0ba902b7",
        name="deliver",
        service="eap",
        resource={"bfm.site": "b"},
        status="error",
        status_message="stale epoch",
        events=(SpanEvent(T0_NS + 1000, "refused", {"epoch": 4}),),
        links=(SpanLink(LINKED, "53995c3f42cd8ad8"),),
    )
    double.add_trace([root, child])
    with LokiClient(_closed_port_url(), traces_url=double.url) as client:
        spans = client.trace(TRACE.upper())
    assert double.seen[-1].path == f"/api/traces/{TRACE}"
    by_id = {s.span_id: s for s in spans}
    assert set(by_id) == {"00f067aa0ba902b7", "b7ad6b7169203331"}
    got = by_id["b7ad6b7169203331"]
    assert (got.trace_id, got.parent_span_id, got.name) == (TRACE, root.span_id, "deliver")
    assert (got.service, got.resource["bfm.site"]) == ("eap", "b")
    assert (got.start_ns, got.end_ns) == (T0_NS, T0_NS + 5_000_000)
    assert (got.status, got.status_message) == ("error", "stale epoch")
    assert [(e.name, e.ts_ns, dict(e.attributes)) for e in got.events] == [
        ("refused", T0_NS + 1000, {"epoch": 4})
    ]
    assert [(link.trace_id, link.span_id) for link in got.links] == [(LINKED, "53995c3f42cd8ad8")]
    assert by_id["00f067aa0ba902b7"].attributes == {"shard": 3}


def test_trace_reads_the_v2_shape_and_an_unknown_trace_is_empty(double: LokiApiDouble) -> None:
    double.add_trace([_span(TRACE, "00f067aa0ba902b7")], shape="trace")
    with LokiClient(double.url) as client:
        assert [s.span_id for s in client.trace(TRACE)] == ["00f067aa0ba902b7"]
        assert client.trace(LINKED) == []
