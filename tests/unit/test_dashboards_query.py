"""failover.dashboards_query: variables expanded as Grafana expands them, and each kind
of query run over real HTTP against small Prometheus, Loki and Tempo stand-ins on
127.0.0.1 that speak those APIs' JSON (answers, error bodies), plus a port nobody
listens on."""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from failover import dashboards_build as builder
from failover.dashboards_query import (
    Backends,
    TargetResult,
    UnknownVariable,
    Window,
    expand,
    legend_name,
    run_dashboard,
    run_target,
    variable_values,
)

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
Answer = tuple[int, str, bytes]  # status, content type, body


def prom_ok(result_type: str, result: Any) -> Answer:
    body = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return 200, "application/json", json.dumps(body).encode()


def prom_error(status: int, message: str) -> Answer:
    body = {"status": "error", "errorType": "bad_data", "error": message}
    return status, "application/json", json.dumps(body).encode()


@dataclass
class FakeBackend:
    """A real HTTP server answering each path from ``routes`` (404 otherwise) and
    recording every request as (path, query parameters)."""

    routes: dict[str, Callable[[dict[str, str]], Answer]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def asked(self, path: str) -> list[dict[str, str]]:
        return [params for asked_path, params in self.requests if asked_path == path]


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    fake = FakeBackend()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            fake.requests.append((parts.path, params))
            route = fake.routes.get(parts.path)
            status, content_type, body = (
                route(params) if route else (404, "text/plain", b"404 page not found\n")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def model(*variables: dict[str, Any], panels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    datasources = [
        {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus"},
        {"name": "DS_LOKI", "type": "datasource", "query": "loki"},
        {"name": "DS_TRACES", "type": "datasource", "query": "tempo"},
    ]
    return {
        "uid": "bfm-test",
        "templating": {"list": datasources + list(variables)},
        "panels": panels or [],
    }


SITE = {
    "name": "site",
    "type": "query",
    "multi": True,
    "includeAll": True,
    "allValue": ".*",
    "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
}
LOKI_SITE = {
    "name": "lsite",
    "type": "query",
    "multi": True,
    "includeAll": True,
    "allValue": None,
    "datasource": {"type": "loki", "uid": "${DS_LOKI}"},
}
TRACE_ID = {"name": "trace_id", "type": "textbox", "current": {"text": "", "value": ""}}
PROM = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
LOKI = {"type": "loki", "uid": "${DS_LOKI}"}
TEMPO = {"type": "tempo", "uid": "${DS_TRACES}"}
WINDOW = Window(start_s=1_700_000_000.0, end_s=1_700_000_900.0)  # 15 min, 300 points: 3 s


# -- variables and the window ---------------------------------------------------------


def test_every_variable_form_is_expanded() -> None:
    values = {"site": "(a|b)", "__rate_interval": "4s", "trace_id": "abc"}
    expr = (
        'rate(x{site=~"$site", s2=~"${site}", s3=~"${site:regex}", s4=~"[[site]]"}'
        "[$__rate_interval])"
    )
    assert expand(expr, values) == (
        'rate(x{site=~"(a|b)", s2=~"(a|b)", s3=~"(a|b)", s4=~"(a|b)"}[4s])'
    )
    assert expand("$trace_id", values) == "abc"
    # A dollar that starts no name is left alone: label_replace's $1, a regex anchor.
    assert expand('label_replace(x, "a", "$1", "b", "(.*)$")', values) == (
        'label_replace(x, "a", "$1", "b", "(.*)$")'
    )


def test_an_unknown_variable_names_itself_the_expression_and_the_fix() -> None:
    with pytest.raises(UnknownVariable) as caught:
        expand('up{site=~"$sitee"}', {"site": ".*"})
    message = str(caught.value)
    assert "$sitee" in message
    assert 'up{site=~"$sitee"}' in message
    assert "templating" in message
    assert caught.value.name == "sitee"


def test_label_variables_expand_to_all_one_value_or_an_escaped_regex() -> None:
    dashboard = model(SITE, LOKI_SITE, TRACE_ID)
    assert variable_values(dashboard) == {"site": ".*", "lsite": ".+", "trace_id": ""}
    assert variable_values(dashboard, {"site": ["$__all"]})["site"] == ".*"
    assert variable_values(dashboard, {"site": ["a"]})["site"] == "a"
    chosen = variable_values(dashboard, {"site": ["a", "b.c"], "lsite": ["x|y"]})
    # Each value escaped for a regex inside a double-quoted PromQL/LogQL string.
    assert chosen["site"] == "(a|b\\\\.c)"
    assert chosen["lsite"] == "x\\\\|y"
    assert variable_values(dashboard, {"trace_id": ["4bf92f"], "nope": ["z"]})["trace_id"] == (
        "4bf92f"
    )


def test_a_textbox_keeps_its_default() -> None:
    search = {"name": "search", "type": "textbox", "current": {"value": "failover"}}
    assert variable_values(model(search)) == {"search": "failover"}


@pytest.mark.parametrize(
    ("window", "step_s"),
    [
        (Window(0, 900), 3.0),  # 900 s over 300 points
        (Window(0, 3601), 13.0),  # 12.003 s rounded up to whole seconds
        (Window(0, 60), 1.0),  # 0.2 s: never under one scrape interval
        (Window(0, 60, scrape_interval_s=15), 15.0),
        (Window(0, 86400, max_points=1000, scrape_interval_s=15), 87.0),
    ],
)
def test_the_step_is_grafanas_interval(window: Window, step_s: float) -> None:
    assert window.step_s == step_s


def test_builtins_are_written_as_grafana_writes_them() -> None:
    assert Window(0, 900).builtins() == {
        "__interval": "3s",
        "__interval_ms": "3000",
        "__rate_interval": "4s",  # max(4 * 1 s, 3 s + 1 s)
        "__rate_interval_ms": "4000",
        "__range": "900s",
        "__range_s": "900",
        "__range_ms": "900000",
        "__from": "0",
        "__to": "900000",
    }
    hour = Window(0, 3600, scrape_interval_s=15).builtins()
    assert (hour["__interval"], hour["__rate_interval"]) == ("15s", "1m")  # max(60, 30)
    day = Window(0, 86400, scrape_interval_s=15).builtins()
    assert (day["__interval"], day["__rate_interval"]) == ("288s", "303s")


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        Window(10, 5)


def test_legends_fill_in_labels() -> None:
    labels = {"__name__": "up", "site": "a", "job": "bfm"}
    assert legend_name("{{component}} @ {{ site }}", labels) == " @ a"
    assert legend_name("", labels) == 'up{job="bfm", site="a"}'
    assert legend_name("", {}) == "{}"


# -- Prometheus -------------------------------------------------------------------------


def panel(kind: str, source: dict[str, str], *targets: dict[str, Any]) -> dict[str, Any]:
    return {"title": f"a {kind}", "type": kind, "datasource": source, "targets": list(targets)}


def test_a_range_query_is_sent_expanded_with_the_step(backend: FakeBackend) -> None:
    matrix = [
        {"metric": {"site": "a"}, "values": [[1_700_000_000, "1"], [1_700_000_003, "NaN"]]},
        {"metric": {"site": "b"}, "values": [[1_700_000_000, "+Inf"]]},
    ]
    backend.routes["/api/v1/query_range"] = lambda _: prom_ok("matrix", matrix)
    target = {
        "expr": 'sum by (site) (rate(x{site=~"$site"}[$__rate_interval]))',
        "legendFormat": "{{site}}",
        "refId": "A",
    }
    the_panel = panel("timeseries", PROM, target)
    dashboard = model(SITE, panels=[the_panel])

    result = run_target(
        dashboard,
        the_panel,
        target,
        Backends(prometheus_url=backend.url),
        WINDOW,
        variable_values(dashboard, {"site": ["a", "b"]}),
    )

    assert result.error == ""
    assert (result.dashboard, result.panel, result.panel_type, result.ref_id) == (
        "bfm-test",
        "a timeseries",
        "timeseries",
        "A",
    )
    assert (result.datasource, result.legend, result.instant) == ("prometheus", "{{site}}", False)
    assert result.expr == 'sum by (site) (rate(x{site=~"(a|b)"}[4s]))'
    (params,) = backend.asked("/api/v1/query_range")
    assert params == {
        "query": result.expr,
        "start": "1700000000",
        "end": "1700000900",
        "step": "3",
    }
    assert result.label_values("site") == {"a", "b"}
    first, second = result.series
    assert first.points[0] == (1_700_000_000.0, 1.0)
    assert math.isnan(first.points[1][1])
    assert second.points == ((1_700_000_000.0, math.inf),)
    assert result.has_data()


def test_an_instant_query_asks_at_the_end_of_the_window(backend: FakeBackend) -> None:
    vector = [{"metric": {"site": "a", "status": "expired"}, "value": [1_700_000_900, "1"]}]
    backend.routes["/api/v1/query"] = lambda _: prom_ok("vector", vector)
    target = {"expr": "x == 1", "instant": True, "format": "table", "refId": "A"}
    the_panel = panel("table", PROM, target)

    result = run_target(
        model(), the_panel, target, Backends(prometheus_url=backend.url), WINDOW, {}
    )

    assert result.instant
    assert backend.asked("/api/v1/query") == [{"query": "x == 1", "time": "1700000900"}]
    assert backend.asked("/api/v1/query_range") == []
    assert result.label_values("status") == {"expired"}
    assert result.series[0].points == ((1_700_000_900.0, 1.0),)


def test_exemplars_join_the_series_whose_labels_they_carry(backend: FakeBackend) -> None:
    matrix = [
        {"metric": {"site": "a"}, "values": [[1_700_000_000, "0.2"]]},
        {"metric": {"site": "b"}, "values": [[1_700_000_000, "0.3"]]},
    ]
    exemplars = [
        {
            "seriesLabels": {"__name__": "x_bucket", "site": "b", "le": "0.5"},
            "exemplars": [
                {"labels": {"trace_id": "t1"}, "value": "0.31", "timestamp": 1_700_000_001.5}
            ],
        },
        {
            "seriesLabels": {"__name__": "x_bucket", "site": "c", "le": "1"},
            "exemplars": [{"labels": {"trace_id": "t2"}, "value": "0.9", "timestamp": 1.7e9}],
        },
    ]
    backend.routes["/api/v1/query_range"] = lambda _: prom_ok("matrix", matrix)
    backend.routes["/api/v1/query_exemplars"] = lambda _: (
        200,
        "application/json",
        json.dumps({"status": "success", "data": exemplars}).encode(),
    )
    target = {"expr": "histogram_quantile(0.99, x)", "exemplar": True, "refId": "A"}
    the_panel = panel("timeseries", PROM, target)

    result = run_target(
        model(), the_panel, target, Backends(prometheus_url=backend.url), WINDOW, {}
    )

    assert result.error == ""
    (params,) = backend.asked("/api/v1/query_exemplars")
    assert params == {"query": target["expr"], "start": "1700000000", "end": "1700000900"}
    by_site = {series.labels.get("site"): series for series in result.series}
    assert by_site["a"].exemplars == ()
    assert by_site["b"].exemplars == ((1_700_000_001.5, 0.31, "t1"),)
    # No series of site c: its exemplar is a series of its own, with its labels.
    assert by_site["c"].points == ()
    assert by_site["c"].exemplars == ((1.7e9, 0.9, "t2"),)
    assert by_site["c"].labels["le"] == "1"


def test_prometheus_error_bodies_become_the_error(backend: FakeBackend) -> None:
    backend.routes["/api/v1/query_range"] = lambda _: prom_error(
        400, 'invalid parameter "query": 1:5: parse error: unexpected ")"'
    )
    target = {"expr": "sum(x))", "refId": "A"}
    the_panel = panel("timeseries", PROM, target)

    result = run_target(
        model(), the_panel, target, Backends(prometheus_url=backend.url), WINDOW, {}
    )

    assert result.series == ()
    assert not result.has_data()
    assert f"{backend.url}/api/v1/query_range answered 400" in result.error
    assert 'parse error: unexpected ")"' in result.error


def test_a_body_that_is_not_json_is_an_error(backend: FakeBackend) -> None:
    backend.routes["/api/v1/query"] = lambda _: (200, "text/html", b"<html>a proxy</html>")
    target = {"expr": "up", "instant": True, "refId": "A"}
    the_panel = panel("stat", PROM, target)

    result = run_target(
        model(), the_panel, target, Backends(prometheus_url=backend.url), WINDOW, {}
    )

    assert "answered 200: <html>a proxy</html>" in result.error


def test_an_unreachable_backend_is_an_error_never_an_exception() -> None:
    url = closed_port_url()
    targets = [{"expr": f"up{{n='{n}'}}", "refId": chr(65 + n)} for n in range(5)]
    dashboard = model(panels=[panel("timeseries", PROM, *targets)])

    results = run_dashboard(dashboard, Backends(prometheus_url=url, timeout_s=2), WINDOW)

    assert len(results) == 5
    for result in results:
        assert result.error.startswith(f"cannot reach {url} (connection refused)"), result.error
        assert result.series == ()


def test_a_backend_without_a_url_is_not_asked() -> None:
    target = {"expr": '{site=~".+"}', "refId": "A"}
    the_panel = panel("logs", LOKI, target)

    result = run_target(model(), the_panel, target, Backends(), WINDOW, {})

    assert result.datasource == "loki"
    assert result.error == "no URL was given for Loki, so it was not asked"


def test_an_unknown_variable_is_the_targets_error(backend: FakeBackend) -> None:
    target = {"expr": 'up{site=~"$site"}', "refId": "A"}
    the_panel = panel("timeseries", PROM, target)

    result = run_target(
        model(), the_panel, target, Backends(prometheus_url=backend.url), WINDOW, {}
    )

    assert "$site" in result.error
    assert backend.requests == []


# -- Loki ---------------------------------------------------------------------------------


def test_a_log_query_asks_for_the_newest_lines(backend: FakeBackend) -> None:
    streams = [
        {
            "stream": {"site": "a", "component": "producer", "level": "info"},
            "values": [["1700000005000000000", "delayed 2"], ["1700000001500000000", "delayed 1"]],
        }
    ]
    backend.routes["/loki/api/v1/query_range"] = lambda _: prom_ok("streams", streams)
    target = {"expr": '{site=~"$lsite"} |= "delayed"', "maxLines": 50, "refId": "A"}
    the_panel = panel("logs", LOKI, target)
    dashboard = model(LOKI_SITE, panels=[the_panel])

    result = run_target(
        dashboard,
        the_panel,
        target,
        Backends(loki_url=backend.url),
        WINDOW,
        variable_values(dashboard),
    )

    assert result.error == ""
    (params,) = backend.asked("/loki/api/v1/query_range")
    assert params == {
        "query": '{site=~".+"} |= "delayed"',
        "start": "1700000000000000000",
        "end": "1700000900000000000",
        "limit": "50",
        "direction": "backward",
        "step": "3",
    }
    (stream,) = result.series
    assert stream.labels["component"] == "producer"
    assert stream.lines == ((1_700_000_005.0, "delayed 2"), (1_700_000_001.5, "delayed 1"))
    assert result.has_data()


def test_a_loki_metric_query_gives_points(backend: FakeBackend) -> None:
    matrix = [{"metric": {"level": "error"}, "values": [[1_700_000_003, "2"]]}]
    backend.routes["/loki/api/v1/query_range"] = lambda _: prom_ok("matrix", matrix)
    target = {"expr": 'sum by (level) (rate({site=~".+"}[$__interval]))', "refId": "A"}
    the_panel = panel("timeseries", LOKI, target)

    result = run_target(model(), the_panel, target, Backends(loki_url=backend.url), WINDOW, {})

    assert result.expr == 'sum by (level) (rate({site=~".+"}[3s]))'
    assert result.series[0].points == ((1_700_000_003.0, 2.0),)
    assert backend.asked("/loki/api/v1/query_range")[0]["limit"] == "1000"  # Grafana's default


def test_a_loki_error_in_plain_text_becomes_the_error(backend: FakeBackend) -> None:
    backend.routes["/loki/api/v1/query_range"] = lambda _: (
        400,
        "text/plain",
        b"parse error : queries require at least one regexp or equality matcher\n",
    )
    target = {"expr": '{site=~".*"}', "refId": "A"}
    the_panel = panel("logs", LOKI, target)

    result = run_target(model(), the_panel, target, Backends(loki_url=backend.url), WINDOW, {})

    assert result.error == (
        f"{backend.url}/loki/api/v1/query_range answered 400: parse error : queries require "
        "at least one regexp or equality matcher"
    )


# -- traces -------------------------------------------------------------------------------


def tempo_trace() -> dict[str, Any]:
    def span(span_id: str, name: str, start_ns: int, end_ns: int) -> dict[str, Any]:
        return {
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
            "spanId": span_id,
            "name": name,
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(end_ns),
        }

    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "producer"}}]}
    spans = [span("01", "send", 1_700_000_001 * 10**9, 1_700_000_001_250_000_000)]
    spans.append(span("02", "ack", 1_700_000_001_100_000_000, 1_700_000_001_200_000_000))
    return {"batches": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}


def test_a_trace_panel_counts_the_spans_of_the_chosen_trace(backend: FakeBackend) -> None:
    backend.routes["/api/traces/4bf92f3577b34da6a3ce929d0e0e4736"] = lambda _: (
        200,
        "application/json",
        json.dumps(tempo_trace()).encode(),
    )
    target = {"expr": "$trace_id", "refId": "A"}
    the_panel = panel("traces", TEMPO, target)
    dashboard = model(TRACE_ID, panels=[the_panel])
    values = variable_values(dashboard, {"trace_id": ["4BF92F3577B34DA6A3CE929D0E0E4736"]})

    result = run_target(
        dashboard, the_panel, target, Backends(traces_url=backend.url), WINDOW, values
    )

    assert result.error == ""
    assert result.datasource == "tempo"
    assert [series.labels["name"] for series in result.series] == ["send", "ack"]
    assert result.label_values("service") == {"producer"}
    assert result.series[0].points == ((1_700_000_001.0, pytest.approx(0.25)),)
    assert result.has_data()


def test_a_trace_panel_without_a_trace_id_is_skipped_and_an_unknown_trace_is_no_data(
    backend: FakeBackend,
) -> None:
    target = {"expr": "$trace_id", "refId": "A"}
    the_panel = panel("traces", TEMPO, target)
    dashboard = model(TRACE_ID, panels=[the_panel])
    backends = Backends(traces_url=backend.url)

    empty = run_target(dashboard, the_panel, target, backends, WINDOW, variable_values(dashboard))
    assert empty.skipped == "$trace_id is empty: no trace id was chosen"
    assert backend.requests == []

    values = variable_values(dashboard, {"trace_id": ["ffff"]})
    unknown = run_target(dashboard, the_panel, target, backends, WINDOW, values)
    assert backend.asked("/api/traces/ffff") == [{}]
    assert (unknown.error, unknown.skipped, unknown.has_data()) == ("", "", False)


# -- a whole dashboard --------------------------------------------------------------------


def test_a_whole_dashboard_runs_every_query_and_every_annotation(backend: FakeBackend) -> None:
    backend.routes["/api/v1/query_range"] = lambda _: prom_ok("matrix", [])
    backend.routes["/api/v1/query"] = lambda _: prom_ok("vector", [])
    dashboard = builder.build(DASHBOARDS / "controller.dashboard.py").model
    targets = [
        (p["title"], t["refId"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if not t.get("hide")
    ]
    annotations = [a["name"] for a in dashboard["annotations"]["list"] if a.get("expr")]
    assert annotations, "the controller dashboard has its decision annotations"

    results = run_dashboard(
        dashboard, Backends(prometheus_url=backend.url), WINDOW, {"site": ["a"]}
    )

    assert [(r.panel, r.ref_id) for r in results] == targets + [
        (f"annotation: {name}", "Anno") for name in annotations
    ]
    assert all(isinstance(r, TargetResult) and r.error == "" for r in results), [
        r.error for r in results if r.error
    ]
    assert {r.panel_type for r in results[-len(annotations) :]} == {"annotation"}
    # Annotations are range queries at their own step (15 s), never finer than the window.
    annotation_steps = [p["step"] for p in backend.asked("/api/v1/query_range")]
    assert "15" in annotation_steps
    sent = [params["query"] for _, params in backend.requests]
    assert all("$" not in query for query in sent), sent
    assert any('site=~"a"' in query for query in sent)
