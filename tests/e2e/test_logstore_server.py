"""The embedded log store over real HTTP on 127.0.0.1: fed by the real senders (BFM's
python-logging-loki shipper, Loki's protobuf+snappy push, the OpenTelemetry SDK's OTLP/HTTP
log and span exporters) and read by BFM's Loki client, as a Loki and a Tempo would be.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bfm_observe.logs import JsonFormatter
from bfm_observe.logstore.client import LogLine, LokiAuthError, LokiClient, LokiQueryError
from bfm_observe.logstore.records import LogRecord
from bfm_observe.logstore.server import LogStoreServer
from bfm_observe.logstore.store import LogStore
from bfm_observe.logstore.wire_loki import encode_loki_protobuf
from bfm_observe.loki import BfmLokiEmitter, LokiShipper

HOUR_NS = 3600 * 10**9
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LogStoreServer]:
    store = LogStore(tmp_path / "logs.db")
    server = LogStoreServer(store, port=0)
    server.start()
    yield server
    server.stop()
    store.close()


def _now_ns() -> int:
    return time.time_ns()


def _wait_for(client: LokiClient, query: str, count: int = 1) -> list[LogLine]:
    deadline_s = time.monotonic() + 20
    while True:
        found = client.query_range(
            query, start_ns=_now_ns() - HOUR_NS, end_ns=_now_ns() + 10**9, limit=1000
        )
        if len(found.lines) >= count or time.monotonic() > deadline_s:
            return list(found.lines)
        time.sleep(0.05)


def test_bfm_loki_shipper_lines_are_found_by_trace_id(served: LogStoreServer) -> None:
    labels = {"site": "a", "component": "eap", "namespace": "hemisphere"}
    formatter = JsonFormatter(site="a", component="eap")
    shipper = LokiShipper(BfmLokiEmitter(served.url, labels), formatter)
    logger = logging.getLogger("test.logstore.shipper")
    logger.propagate = False
    logger.addHandler(shipper)
    logger.setLevel(logging.INFO)
    try:
        logger.info("applied decision", extra={"trace_id": TRACE, "span_id": "00f067aa0ba902b7"})
        logger.warning("something else")
    finally:
        shipper.close()
        logger.removeHandler(shipper)
    client = LokiClient(served.url)
    (line,) = _wait_for(client, f'{{site="a"}} | trace_id="{TRACE}"')
    assert "applied decision" in line.line
    assert line.labels["component"] == "eap"
    everything = _wait_for(client, '{namespace="hemisphere"}', count=2)
    assert len(everything) == 2
    assert client.label_values("level") == ["info", "warning"]
    assert "site" in client.labels()
    assert client.series(['{site="a"}'])


def test_protobuf_snappy_push_and_metric_queries(served: LogStoreServer) -> None:
    now_ns = _now_ns()
    records = [
        LogRecord("fake", {"site": site, "component": "router"}, now_ns - i * 10**9, f"line {i}")
        for i in range(30)
        for site in ("a", "b")
    ]
    answer = requests.post(
        served.url + "/loki/api/v1/push",
        data=encode_loki_protobuf(records),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert answer.status_code == 204, answer.text
    client = LokiClient(served.url)
    assert len(_wait_for(client, '{component="router"}', count=60)) == 60
    found = client.query('sum by (site) (count_over_time({component="router"}[1m]))', at_ns=now_ns)
    values = {s.metric["site"]: s.points[-1][1] for s in found.series}
    assert values == {"a": 30.0, "b": 30.0}
    matrix = client.query_range(
        'sum(rate({component="router"}[10s]))',
        start_ns=now_ns - 20 * 10**9,
        end_ns=now_ns,
        step_s=10,
    )
    assert [round(v, 3) for _, v in matrix.series[0].points] == [2.0, 2.0, 2.0]


def test_otlp_logs_and_spans_from_the_sdk_exporters(served: LogStoreServer) -> None:
    resource = Resource.create({"service.name": "eap", "bfm.site": "b"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=served.url + "/v1/traces"))
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=served.url + "/otlp/v1/logs"))
    )
    logger = logging.getLogger("test.logstore.otlp")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    tracer = tracer_provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("bfm.apply") as span:
            logger.warning("applied under epoch 7")
            trace_id = f"{span.get_span_context().trace_id:032x}"
    finally:
        logger.removeHandler(handler)
        tracer_provider.shutdown()
        logger_provider.shutdown()
    client = LokiClient(served.url)
    (line,) = _wait_for(client, f'{{service_name="eap"}} | trace_id="{trace_id}"')
    assert "applied under epoch 7" in line.line
    (kept,) = client.trace(trace_id)
    assert kept.name == "bfm.apply" and kept.service == "eap"
    assert kept.resource["bfm.site"] == "b"
    assert client.trace("0" * 31 + "1") == []


def test_bad_requests_get_loki_errors(served: LogStoreServer) -> None:
    client = LokiClient(served.url)
    with pytest.raises(LokiQueryError, match="unwrap"):
        client.query_range('{a="b"} | unwrap x', start_ns=0, end_ns=_now_ns())
    bad = requests.post(
        served.url + "/loki/api/v1/push",
        data=b'{"streams": [{"stream": {}, "values": [["1", "x"]]}]}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert bad.status_code == 400 and "label" in bad.text
    huge = requests.post(
        served.url + "/loki/api/v1/push",
        data=b"x" * (served.max_body_bytes + 1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert huge.status_code == 413 and "smaller batches" in huge.text
    assert requests.get(served.url + "/nope", timeout=10).status_code == 404
    # nothing above was stored, and the server still answers
    assert client.labels() == []
    assert client.ready()


def _requests_counted(url: str, op: str, outcome: str) -> float:
    """``bfm_logstore_requests_total{op, outcome}`` as the store's /metrics says."""
    text = requests.get(url + "/metrics", timeout=10).text
    wanted = f'op="{op}",outcome="{outcome}"'
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("bfm_logstore_requests_total{") and wanted in line
    ]
    return sum(values)


def test_refused_requests_are_counted_and_logged_without_flooding(
    served: LogStoreServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile input: every refusal counted at /metrics, a flood logged once (with how
    many), and the server still answers."""
    before = _requests_counted(served.url, "push", "bad-request")
    with caplog.at_level(logging.WARNING, logger="bfm.logstore"):
        for _ in range(25):
            bad = requests.post(
                served.url + "/loki/api/v1/push",
                data=b"{not json",
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert bad.status_code == 400
    assert _requests_counted(served.url, "push", "bad-request") == before + 25
    refusals = [r for r in caplog.records if getattr(r, "event", "") == "logstore_refused"]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]  # one line, not 25
    assert "log store push request(s) bad-request (HTTP 400)" in refusals[0].getMessage()
    assert _requests_counted(served.url, "metrics", "ok") >= 1
    assert LokiClient(served.url).ready()


def test_token_and_tenants_as_loki(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db")
    server = LogStoreServer(store, port=0, token="s3cret", multi_tenant=True)
    server.start()
    try:
        assert requests.get(server.url + "/ready", timeout=10).status_code == 200
        with pytest.raises(LokiAuthError):
            LokiClient(server.url, tenant="t1").labels()
        for tenant in ("t1", "t2"):
            pushed = requests.post(
                server.url + "/loki/api/v1/push",
                data=json.dumps(
                    {"streams": [{"stream": {"who": tenant}, "values": [[str(_now_ns()), "hi"]]}]}
                ),
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer s3cret",
                    "X-Scope-OrgID": tenant,
                },
                timeout=10,
            )
            assert pushed.status_code == 204, pushed.text
        no_tenant = requests.get(
            server.url + "/loki/api/v1/labels",
            headers={"Authorization": "Bearer s3cret"},
            timeout=10,
        )
        assert no_tenant.status_code == 401 and "no org id" in no_tenant.text
        t1 = LokiClient(server.url, token="s3cret", tenant="t1")
        assert t1.label_values("who") == ["t1"]
        assert [x.labels["who"] for x in _wait_for(t1, '{who=~".+"}')] == ["t1"]
    finally:
        server.stop()
        store.close()


def test_the_server_enforces_retention_by_itself(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db", retention_s=3600)
    server = LogStoreServer(store, port=0, retention_interval_s=0.1)
    now_ns = _now_ns()
    store.push(
        [
            LogRecord("fake", {"site": "a"}, now_ns - 2 * HOUR_NS, "too old"),
            LogRecord("fake", {"site": "a"}, now_ns, "recent"),
        ]
    )
    server.start()
    try:
        client = LokiClient(server.url)
        deadline_s = time.monotonic() + 20
        while store.stats().lines > 1 and time.monotonic() < deadline_s:
            time.sleep(0.05)
        found = client.query_range('{site="a"}', start_ns=now_ns - 3 * HOUR_NS, end_ns=now_ns + 1)
        assert [line.line for line in found.lines] == ["recent"]
    finally:
        server.stop()
        store.close()
