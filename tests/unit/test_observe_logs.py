"""JSON log lines (trace ids from the current span or from extra=) and the Loki push body
(labels site/component/level/namespace only, trace ids as structured metadata)."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
from opentelemetry import trace

import bfm_observe
from bfm_observe.logs import JsonFormatter, rfc3339_ms
from bfm_observe.loki import BfmLokiEmitter, Entry, entry_of, push_url

pytestmark = pytest.mark.usefixtures("clean_telemetry")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_the_current_span_and_extra_fields() -> None:
    stream = io.StringIO()
    bfm_observe.configure("router", "a", log_stream=stream, sample_ratio=1.0)
    log = logging.getLogger("bfm.test")
    log.info("outside")
    with trace.get_tracer("bfm").start_as_current_span("work") as span:
        log.warning("inside %s", "span", extra={"shard": 3})
    ctx = span.get_span_context()
    outside, inside = lines(stream)
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert inside == {
        "ts": inside["ts"],
        "level": "warning",
        "logger": "bfm.test",
        "msg": "inside span",
        "site": "a",
        "component": "router",
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "shard": 3,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inside["ts"])


def test_ids_passed_with_extra_win_over_the_current_span() -> None:
    stream = io.StringIO()
    bfm_observe.configure("router", "a", log_stream=stream, sample_ratio=1.0)
    with trace.get_tracer("bfm").start_as_current_span("work"):
        logging.getLogger("bfm.test").info("x", extra={"trace_id": TRACE, "span_id": SPAN})
    (line,) = lines(stream)
    assert (line["trace_id"], line["span_id"]) == (TRACE, SPAN)


def test_unsampled_spans_still_name_their_trace() -> None:
    stream = io.StringIO()
    bfm_observe.configure("router", "a", log_stream=stream, sample_ratio=0.0)
    with trace.get_tracer("bfm").start_as_current_span("work") as span:
        logging.getLogger("bfm.test").info("x")
    assert lines(stream)[0]["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_exceptions_become_one_error_field() -> None:
    formatter = JsonFormatter("b", "module")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    doc = json.loads(formatter.format(record))
    assert doc["level"] == "error"
    assert "RuntimeError: boom" in doc["error"]
    assert (doc["site"], doc["component"]) == ("b", "module")


def test_timestamps_are_utc_milliseconds() -> None:
    assert rfc3339_ms(0.5) == "1970-01-01T00:00:00.500Z"
    assert rfc3339_ms(1_700_000_000.0429) == "2023-11-14T22:13:20.042Z"


def test_loki_body_has_four_labels_and_metadata_as_third_element() -> None:
    labels = {"site": "a", "component": "router", "namespace": "hemisphere"}
    emitter = BfmLokiEmitter("http://loki:3100", labels)
    assert emitter.url == "http://loki:3100/loki/api/v1/push"
    assert push_url("http://loki:3100/loki/api/v1/push") == "http://loki:3100/loki/api/v1/push"
    body = emitter.build_batch(
        [
            Entry("1", "info", "l1", {"trace_id": TRACE, "span_id": SPAN}),
            Entry("2", "info", "l2", {}),
            Entry("3", "error", "l3", {"trace_id": TRACE}),
        ]
    )
    assert body == {
        "streams": [
            {
                "stream": {**labels, "level": "info"},
                "values": [["1", "l1", {"trace_id": TRACE, "span_id": SPAN}], ["2", "l2"]],
            },
            {"stream": {**labels, "level": "error"}, "values": [["3", "l3", {"trace_id": TRACE}]]},
        ]
    }


def test_loki_entry_takes_tags_and_ids_from_the_record_but_no_labels() -> None:
    labels = {"site": "a", "component": "router", "namespace": "hemisphere"}
    emitter = BfmLokiEmitter("http://loki:3100", labels)
    record = logging.makeLogRecord(
        {"levelname": "WARNING", "created": 1.5, "trace_id": TRACE, "tags": {"shard": "3"}}
    )
    body = emitter.build_payload(record, "line")
    (stream,) = body["streams"]
    assert stream["stream"] == {**labels, "level": "warning"}  # extra tags are no labels
    assert stream["values"] == [["1500000000", "line", {"trace_id": TRACE}]]
    assert entry_of(record, "line").metadata == {"trace_id": TRACE}


def test_a_record_about_another_component_keeps_it() -> None:
    """A site process's line about eap's decision says component eap (the run checker
    reads the decisions' components from these lines); the rest say the process's."""
    formatter = JsonFormatter("w", "bfm-site")
    about = logging.getLogger("x").makeRecord(
        "x", logging.INFO, __file__, 1, "decided", (), None, extra={"component": "eap"}
    )
    plain = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "hi", (), None)
    assert json.loads(formatter.format(about))["component"] == "eap"
    assert json.loads(formatter.format(plain))["component"] == "bfm-site"
    assert json.loads(formatter.format(about))["site"] == "w"
