"""Log lines shipped to a real HTTP server standing in for Loki: the same JSON documents
as on stderr, labels site/component/level/namespace only, trace ids as structured
metadata; a hung or absent Loki never blocks a logging call and drops are counted;
shutdown flushes what is queued."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest
from opentelemetry import trace
from prometheus_client import REGISTRY
from support.loki_receiver import LokiEntry, LokiReceiver, closed_port_url

import bfm_observe

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_telemetry")]
WAIT_S = 10.0
LABELS = {"site", "component", "level", "namespace"}
log = logging.getLogger("bfm.test.loki")


def counter(name: str, site: str, component: str) -> float:
    value = REGISTRY.get_sample_value(name, {"site": site, "component": component})
    return value or 0.0


def msgs(entries: list[LokiEntry]) -> list[str]:
    return [json.loads(e.line)["msg"] for e in entries]


def test_lines_carry_trace_ids_as_structured_metadata_and_four_labels() -> None:
    stream = io.StringIO()
    with LokiReceiver() as loki:
        bfm_observe.configure("router", "a", loki_url=loki.url, sample_ratio=1.0, log_stream=stream)
        log.info("plain", extra={"tags": {"shard": "1"}})
        with trace.get_tracer("bfm").start_as_current_span("work") as span:
            log.error("in span")
        entries = loki.wait_for(lambda got: len(got) >= 2, WAIT_S)
    assert loki.errors == []
    plain, in_span = sorted(entries, key=lambda e: e.ts_ns)
    assert plain.labels == {
        "site": "a",
        "component": "router",
        "level": "info",
        "namespace": "hemisphere",
    }
    assert in_span.labels["level"] == "error"
    assert set(in_span.labels) == LABELS
    assert plain.metadata is None
    ctx = span.get_span_context()
    assert in_span.metadata == {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
    }
    assert [plain.line, in_span.line] == stream.getvalue().splitlines()  # same documents


def test_batches_put_many_lines_in_one_push() -> None:
    with LokiReceiver() as loki:
        bfm_observe.configure("router", "a", loki_url=loki.url, log_stream=io.StringIO())
        for i in range(300):
            log.info("line %d", i)
        entries = loki.wait_for(lambda got: len(got) >= 300, WAIT_S)
    assert msgs(entries) == [f"line {i}" for i in range(300)]
    assert loki.pushes < 30  # ~1 push per 0.5 s or 500 lines, not one per line
    assert counter("bfm_log_lines_shipped_total", "a", "router") >= 300


def test_loki_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with LokiReceiver() as loki:
        monkeypatch.setenv("BFM_LOKI_URL", loki.url)
        bfm_observe.configure("router", "w", log_stream=io.StringIO())
        log.warning("via env")
        (entry,) = loki.wait_for(lambda got: len(got) >= 1, WAIT_S)
    assert entry.labels["site"] == "w"


def test_shutdown_flushes_queued_lines() -> None:
    with LokiReceiver() as loki:
        bfm_observe.configure("router", "a", loki_url=loki.url, log_stream=io.StringIO())
        for i in range(1200):
            log.info("queued %d", i)
        bfm_observe.shutdown()
        assert len(loki.entries()) == 1200  # no waiting: shutdown pushed them all


def test_http_client_records_are_never_shipped() -> None:
    with LokiReceiver() as loki:
        bfm_observe.configure(
            "router", "a", loki_url=loki.url, log_stream=io.StringIO(), log_level=logging.DEBUG
        )
        logging.getLogger("urllib3.connectionpool").warning("from urllib3")
        logging.getLogger("requests").warning("from requests")
        log.info("marker")
        loki.wait_for(lambda got: "marker" in msgs(got), WAIT_S)
        bfm_observe.shutdown()
        assert msgs(loki.entries()) == ["marker"]


@pytest.mark.parametrize("where", ["hung", "closed port"])
def test_a_hung_or_absent_loki_never_blocks_and_drops_are_counted(where: str) -> None:
    site = "a" if where == "hung" else "b"
    before = counter("bfm_log_lines_dropped_total", site, "router")
    with LokiReceiver(mode="hang") as hung:
        url = hung.url if where == "hung" else closed_port_url()
        tel = bfm_observe.configure(
            "router", site, loki_url=url, loki_queue_size=50, log_stream=io.StringIO()
        )
        started = time.monotonic()
        for i in range(2000):
            log.info("line %d", i)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, elapsed  # ~0.1 s here; a blocking handler would take minutes
        assert tel.dropped_lines() >= 2000 - 50 - 500  # what neither queue nor one batch held
        if where == "hung":
            hung.wait_connections(1, WAIT_S)
        started = time.monotonic()
        bfm_observe.shutdown()
        assert time.monotonic() - started < 6.0  # bounded flush, even against a hung server
    for thread in threading.enumerate():  # a push may outlive shutdown's bounded wait
        if thread.name == "bfm-loki-shipper":
            thread.join(WAIT_S)
    dropped = tel.dropped_lines()
    assert counter("bfm_log_lines_dropped_total", site, "router") - before == dropped
    assert dropped <= 2000
