"""The log store's push decoders, fed by the real clients and by hand-built edge cases.

Expected behaviour is taken from:
- Loki push API: https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs
  and grafana/loki pkg/push/push.proto (field numbers), pkg/loghttp/push/push.go
  (Content-Encoding), pkg/loghttp/entry.go (JSON values);
- Loki's OTLP mapping: https://grafana.com/docs/loki/latest/send-data/otel/
- OTLP/JSON: https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding
- Tempo trace by id: https://grafana.com/docs/tempo/latest/api_docs/#query
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import cramjam
import pytest
import requests
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from logging_loki.emitter import LokiEmitterV1  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bfm_observe.logstore.records import LogRecord, SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.wire_loki import (
    PushError,
    decode_loki_json,
    decode_loki_protobuf,
    decompress,
    encode_loki_protobuf,
    format_label_set,
    parse_label_set,
)
from bfm_observe.logstore.wire_otlp import (
    any_value_to_string,
    decode_otlp_logs,
    decode_otlp_traces,
    normalize_label,
)
from bfm_observe.logstore.wire_tempo import decode_tempo_json, spans_to_tempo_json
from bfm_observe.loki import BfmLokiEmitter, Entry

PB = "application/x-protobuf"
JSON = "application/json"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def push_json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --- Loki JSON ---------------------------------------------------------------------------


def test_python_logging_loki_body_decodes_to_its_labels_and_line() -> None:
    emitter = LokiEmitterV1("http://loki/loki/api/v1/push", tags={"site": "a"})
    record = logging.makeLogRecord(
        {
            "name": "bfm.router",
            "levelname": "WARNING",
            "msg": "queue full",
            "tags": {"module": "m1"},
        }
    )
    payload = emitter.build_payload(record, "queue full")
    body = requests.Request("POST", emitter.url, json=payload).prepare().body
    assert isinstance(body, bytes)
    [got] = decode_loki_json(body, "fake")
    want_ts = int(payload["streams"][0]["values"][0][0])
    labels = {"site": "a", "severity": "warning", "logger": "bfm.router", "module": "m1"}
    assert got == LogRecord("fake", labels, want_ts, "queue full", {})


def test_bfm_emitter_batch_carries_trace_ids_as_structured_metadata() -> None:
    emitter = BfmLokiEmitter("http://loki", {"site": "a", "component": "router"})
    entries = [
        Entry("1700000000000000001", "info", "one", {"trace_id": TRACE_ID, "span_id": SPAN_ID}),
        Entry("1700000000000000002", "error", "two", {}),
        Entry("1700000000000000003", "info", "three", {}),
    ]
    body = requests.Request("POST", emitter.url, json=emitter.build_batch(entries)).prepare().body
    assert isinstance(body, bytes)
    got = decode_loki_json(body, "t1")
    base = {"site": "a", "component": "router"}
    assert got == [
        LogRecord(
            "t1",
            {**base, "level": "info"},
            1700000000000000001,
            "one",
            {"trace_id": TRACE_ID, "span_id": SPAN_ID},
        ),
        LogRecord("t1", {**base, "level": "info"}, 1700000000000000003, "three", {}),
        LogRecord("t1", {**base, "level": "error"}, 1700000000000000002, "two", {}),
    ]


def test_json_label_rules_follow_loki() -> None:
    body = push_json(
        {"streams": [{"stream": {"b": "2", "a": "1", "empty": ""}, "values": [["+5", "x"]]}]}
    )
    [got] = decode_loki_json(body, "fake")
    assert list(got.labels.items()) == [("a", "1"), ("b", "2")]  # sorted, empty value dropped
    assert got.ts_ns == 5
    assert decode_loki_json(b"{}", "fake") == []
    assert decode_loki_json(push_json({"streams": [{"stream": {"a": "1"}}]}), "fake") == []


def test_json_turns_unpaired_surrogates_and_bad_utf8_into_replacement_characters() -> None:
    body = b'{"streams":[{"stream":{"a":"1"},"values":[["1","x\\ud800y \xff"]]}]}'
    [got] = decode_loki_json(body, "fake")
    assert got.line == "x\ufffdy \ufffd"


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "JSON object"),
        ({"streams": {}}, '"streams" must be a list'),
        ({"streams": [1]}, "streams[0] must be an object"),
        ({"streams": [{"values": []}]}, "streams[0].stream"),
        ({"streams": [{"stream": {}, "values": []}]}, "at least one label"),
        ({"streams": [{"stream": {"a": ""}, "values": []}]}, "at least one label"),
        ({"streams": [{"stream": {"a": 1}, "values": []}]}, "string label values"),
        ({"streams": [{"stream": {"a.b": "x"}, "values": []}]}, "invalid label name 'a.b'"),
        ({"streams": [{"stream": {"1a": "x"}, "values": []}]}, "invalid label name"),
        ({"streams": [{"stream": {"a": "1"}, "values": {}}]}, "streams[0].values must be"),
        (
            {"streams": [{"stream": {"a": "1"}, "values": [["1", "x"], ["1"]]}]},
            "streams[0].values[1]",
        ),
        ({"streams": [{"stream": {"a": "1"}, "values": [["1", "x", {}, 4]]}]}, "values[0] must be"),
        ({"streams": [{"stream": {"a": "1"}, "values": [[1, "x"]]}]}, "integer nanoseconds"),
        ({"streams": [{"stream": {"a": "1"}, "values": [["1e9", "x"]]}]}, "integer nanoseconds"),
        ({"streams": [{"stream": {"a": "1"}, "values": [[str(2**63), "x"]]}]}, "int64"),
        ({"streams": [{"stream": {"a": "1"}, "values": [["1", 5]]}]}, "log line"),
        (
            {"streams": [{"stream": {"a": "1"}, "values": [["1", "x", {"k": 1}]]}]},
            "structured metadata",
        ),
        (
            {"streams": [{"stream": {"a": "1"}, "values": [["1", "x", ["k"]]]}]},
            "structured metadata",
        ),
    ],
)
def test_json_errors_name_the_place_and_the_expected_shape(doc: Any, fragment: str) -> None:
    with pytest.raises(PushError, match=None) as caught:
        decode_loki_json(push_json(doc), "fake")
    assert fragment in str(caught.value)


def test_json_syntax_error_is_a_push_error() -> None:
    with pytest.raises(PushError, match="not valid JSON"):
        decode_loki_json(b'{"streams": [', "fake")


# --- Content-Encoding ---------------------------------------------------------------------


def test_decompress_accepts_what_loki_accepts() -> None:
    body = push_json({"streams": []}) * 3
    raw_deflate = zlib.compressobj(wbits=-15)
    assert decompress(body, None) == body
    assert decompress(body, "snappy") == body  # the protobuf decoder undoes snappy itself
    assert decompress(gzip.compress(body), "gzip") == body
    assert decompress(gzip.compress(body[:5]) + gzip.compress(body[5:]), "GZIP") == body
    assert decompress(zlib.compress(body), "deflate") == body
    assert decompress(raw_deflate.compress(body) + raw_deflate.flush(), "deflate") == body
    with pytest.raises(PushError, match="'br' is not supported"):
        decompress(body, "br")
    with pytest.raises(PushError, match="more than 100 bytes"):
        decompress(gzip.compress(b"x" * 1000), "gzip", max_bytes=100)
    with pytest.raises(PushError, match="truncated"):
        decompress(gzip.compress(body)[:-9], "gzip")


# --- label-set text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('{app="x", site="a"}', {"app": "x", "site": "a"}),
        ('  { site = "a" ,app="x", }  ', {"app": "x", "site": "a"}),
        (
            r'{a="q\"uote", b="back\\slash", c="new\nline"}',
            {"a": 'q"uote', "b": "back\\slash", "c": "new\nline"},
        ),
        (r'{a="\t\x41\101\u00e9\U0001F600\xc3\xa9"}', {"a": "\tAAé😀é"}),
        ("{a='single \\' quote', b=`raw \\n`}", {"a": "single ' quote", "b": "raw \\n"}),
        ('{a="", b="kept"}', {"b": "kept"}),
        ('up{job="x"}', {"__name__": "up", "job": "x"}),
        ('{a="é ünïcode"}', {"a": "é ünïcode"}),
    ],
)
def test_label_set_text_parses_like_loki(text: str, labels: dict[str, str]) -> None:
    assert parse_label_set(text) == labels


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{}", "at least one label"),
        ('{a=""}', "at least one label"),
        ('{a="1", a="2"}', "duplicate"),
        ('{a.b="1"}', 'expected name="value" at offset 1'),
        ('{1a="1"}', "expected name="),
        ('{a=~"1"}', "expected name="),
        ('{a="1"', "expected ',' or '}'"),
        ('{a="1} x', "expected name="),
        ('{a="1"} x', "unexpected text at offset 8"),
        ('a="1"', "expected '{'"),
        (r'{a="\q"}', "invalid escape"),
        (r'{a="\400"}', "invalid escape"),
        (r'{a="\ud800"}', "invalid escape"),
        (r'{a="\xff"}', "not valid UTF-8"),
        ('{a:b="1"}', "invalid label name 'a:b'"),
        ('{a="line\nbreak"}', "expected name="),
    ],
)
def test_label_set_text_errors(text: str, fragment: str) -> None:
    with pytest.raises(PushError) as caught:
        parse_label_set(text)
    assert fragment in str(caught.value)


label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_sets = st.dictionaries(label_names, st.text(min_size=1, max_size=12), min_size=1, max_size=4)


@settings(max_examples=200)
@given(label_sets)
def test_label_set_text_round_trips(labels: dict[str, str]) -> None:
    assert parse_label_set(format_label_set(labels)) == labels


# --- Loki protobuf ------------------------------------------------------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
log_records = st.builds(
    LogRecord,
    tenant=st.just("fake"),
    labels=st.sampled_from([{"app": "a"}, {"app": "b", "site": "x"}, {"app": 'c\n"q"'}]),
    ts_ns=int64s,
    line=st.text(max_size=30),
    metadata=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
)


def grouped_by_labels(records: Sequence[LogRecord]) -> list[LogRecord]:
    """The order encode_loki_protobuf writes: streams by first appearance, then entries."""
    order = {format_label_set(r.labels): i for i, r in reversed(list(enumerate(records)))}
    return sorted(records, key=lambda r: order[format_label_set(r.labels)])


@settings(max_examples=200)
@given(st.lists(log_records, max_size=8))
def test_protobuf_round_trip(records: list[LogRecord]) -> None:
    assert decode_loki_protobuf(encode_loki_protobuf(records), "fake") == grouped_by_labels(records)


def varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = varint(number << 3 | wire)
    if wire == 0:
        assert isinstance(payload, int)
        return key + varint(payload)
    assert isinstance(payload, bytes)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


UNKNOWN = (
    field(9, 0, 300)
    + field(10, 1, b"\x01" * 8)
    + field(11, 2, b"opaque")
    + field(12, 5, b"\x02" * 4)
    + varint(13 << 3 | 3)
    + field(1, 0, 7)
    + varint(14 << 3 | 3)
    + varint(14 << 3 | 4)
    + varint(13 << 3 | 4)
)
"""Unknown fields of every wire type, including a group nested in a group."""


def test_protobuf_skips_unknown_fields_at_every_level() -> None:
    timestamp = field(1, 0, 1_700_000_000) + UNKNOWN + field(2, 0, 5)
    pair = field(1, 2, b"trace_id") + UNKNOWN + field(2, 2, TRACE_ID.encode())
    entry = (
        field(1, 2, timestamp)
        + UNKNOWN
        + field(2, 2, "héllo".encode())
        + field(3, 2, pair)
        + field(4, 2, field(1, 2, b"parsed") + field(2, 2, b"ignored"))
    )
    stream = field(1, 2, b'{app="x", site="a"}') + UNKNOWN + field(2, 2, entry) + field(3, 0, 99)
    request = UNKNOWN + field(1, 2, stream) + field(2, 2, b"loki")
    body = bytes(cramjam.snappy.compress_raw(request))
    assert decode_loki_protobuf(body, "t") == [
        LogRecord(
            "t",
            {"app": "x", "site": "a"},
            1_700_000_000_000_000_005,
            "héllo",
            {"trace_id": TRACE_ID},
        )
    ]


def test_protobuf_negative_timestamps_and_missing_fields() -> None:
    timestamp = field(1, 0, -2) + field(2, 0, 500)
    stream = field(1, 2, b'{a="1"}') + field(2, 2, field(1, 2, timestamp)) + field(2, 2, b"")
    [first, second] = decode_loki_protobuf(
        bytes(cramjam.snappy.compress_raw(field(1, 2, stream))), "t"
    )
    assert (first.ts_ns, first.line, second.ts_ns, second.line) == (-1_999_999_500, "", 0, "")


@pytest.mark.parametrize(
    ("request_bytes", "fragment"),
    [
        (field(1, 0, 5), "streams: wrong protobuf wire type 0"),
        (field(1, 2, field(2, 2, b"")), "streams[0] has no labels"),
        (field(1, 2, field(1, 0, 1)), "streams[0].labels: wrong protobuf wire type"),
        (field(1, 2, field(1, 2, b"{a=1}")), "expected name="),
        (field(1, 2, field(1, 2, b'{a="\xff"}')), "not valid UTF-8"),
        (
            field(1, 2, field(1, 2, b'{a="1"}') + field(2, 2, field(1, 2, field(1, 2, b"x")))),
            "entries[0].timestamp",
        ),
        (field(1, 2, field(1, 2, b'{a="1"}') + field(2, 2, field(2, 0, 1))), "entries[0].line"),
        (field(1, 2, b"\x0a\x05ab"), "runs past the end"),
        (b"\x0a", "truncated or overlong"),
        (b"\x0a" + b"\xff" * 11, "truncated or overlong"),
        (b"\x07", "invalid protobuf field key"),
        (varint(3 << 3 | 3), "never closed"),
        (varint(3 << 3 | 4), "unbalanced"),
    ],
)
def test_protobuf_errors(request_bytes: bytes, fragment: str) -> None:
    with pytest.raises(PushError) as caught:
        decode_loki_protobuf(bytes(cramjam.snappy.compress_raw(request_bytes)), "t")
    assert fragment in str(caught.value)


def test_protobuf_body_must_be_snappy_and_not_a_bomb() -> None:
    with pytest.raises(PushError, match="not snappy"):
        decode_loki_protobuf(b"\x05\x00", "t")
    with pytest.raises(PushError, match="more than 10"):
        decode_loki_protobuf(bytes(cramjam.snappy.compress_raw(b"x" * 11)), "t", max_bytes=10)


# --- OTLP logs ----------------------------------------------------------------------------


def hex_ids(doc: Any) -> Any:
    """Proto JSON (ids in base64) turned into OTLP/JSON (ids in hex)."""
    if isinstance(doc, list):
        return [hex_ids(item) for item in doc]
    if isinstance(doc, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId")
            else hex_ids(v)
            for k, v in doc.items()
        }
    return doc


def otlp_json(message: Any) -> bytes:
    return json.dumps(hex_ids(json_format.MessageToDict(message))).encode()


RESOURCE = Resource.create(
    {"service.name": "router", "k8s.pod.name": "p1", "site": "a", "deployment.environment": ""}
)


def sdk_logs() -> tuple[ExportLogsServiceRequest, str, str]:
    """Two records through the SDK's logging handler, the first inside a span; returns the
    encoded request and that span's trace and span ids in hex."""
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracer = TracerProvider(resource=RESOURCE).get_tracer("t")
    logger = logging.getLogger("bfm.test.wire")
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with tracer.start_as_current_span("op") as span:
            logger.warning("queue %s full", "q1", extra={"component": "m1", "depth": 3})
            context = span.get_span_context()
        logger.error({"msg": "structured", "n": [1, 2.5, None]})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        provider.shutdown()
    request = encode_logs(exporter.get_finished_logs())
    return request, f"{context.trace_id:032x}", f"{context.span_id:016x}"


@pytest.mark.parametrize("encoding", [PB, JSON])
def test_sdk_logs_map_as_loki_maps_them(encoding: str) -> None:
    request, trace_id, span_id = sdk_logs()
    body = request.SerializeToString() if encoding == PB else otlp_json(request)
    first, second = decode_otlp_logs(body, encoding + "; charset=utf-8", "t")
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    labels = {
        "service_name": "router",
        "k8s_pod_name": "p1",
        "service_instance_id": RESOURCE.attributes["service.instance.id"],
    }
    assert first.labels == labels  # deployment.environment="" is dropped like an absent label
    assert (first.ts_ns, first.line) == (record.time_unix_nano, "queue q1 full")
    assert (first.metadata["trace_id"], first.metadata["span_id"]) == (trace_id, span_id)
    assert {
        k: first.metadata[k]
        for k in ("site", "component", "depth", "severity_text", "severity_number", "scope_name")
    } == {
        "site": "a",
        "component": "m1",
        "depth": "3",
        "severity_text": "WARN",
        "severity_number": "13",
        "scope_name": "bfm.test.wire",
    }
    assert first.metadata["telemetry_sdk_language"] == "python"
    assert first.metadata["observed_timestamp"] == str(record.observed_time_unix_nano)
    assert second.line == '{"msg":"structured","n":[1,2.5,null]}'
    assert "trace_id" not in second.metadata


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def text(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def logs_request(resource: list[KeyValue], **log: Any) -> bytes:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(resource)
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name, scope_logs.scope.version = "lib", "1.2"
    scope_logs.scope.attributes.append(kv("team", text("core")))
    scope_logs.scope.dropped_attributes_count = 2
    scope_logs.log_records.add(**log)
    return bytes(request.SerializeToString())


def test_service_name_discovery_and_defaults() -> None:
    container = [kv("container.name", text("web")), kv("host.name", text("h1"))]
    [got] = decode_otlp_logs(logs_request(container, time_unix_nano=7), PB, "t")
    assert got.labels == {"container_name": "web", "service_name": "web"}
    assert got.metadata == {
        "host_name": "h1",
        "team": "core",
        "scope_name": "lib",
        "scope_version": "1.2",
        "scope_dropped_attributes_count": "2",
    }
    [got] = decode_otlp_logs(logs_request([], observed_time_unix_nano=9), PB, "t")
    assert (got.labels, got.ts_ns) == ({"service_name": "unknown_service"}, 9)
    [got] = decode_otlp_logs(logs_request([]), PB, "t", received_ns=11)
    assert got.ts_ns == 11 and "observed_timestamp" not in got.metadata


def test_nested_attributes_flatten_and_names_normalize() -> None:
    nested = AnyValue()
    inner = nested.kvlist_value.values.add(key="c.d")
    inner.value.kvlist_value.values.add(key="e", value=AnyValue(int_value=1))
    attributes = [
        kv("a.b", nested),
        kv("1st", text("x")),
        kv("_p", text("y")),
        kv("__q", text("z")),
    ]
    [got] = decode_otlp_logs(logs_request([], attributes=attributes, flags=1), PB, "t")
    assert {k: v for k, v in got.metadata.items() if not k.startswith("scope")} == {
        "a_b_c_d_e": "1",
        "key_1st": "x",
        "key_p": "y",
        "__q": "z",
        "team": "core",
        "flags": "1",
    }
    assert [normalize_label(n) for n in ("k8s.pod-name", "9", "_", "")] == [
        "k8s_pod_name",
        "key_9",
        "key_",
        "",
    ]


def array(*values: AnyValue) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(values)
    return value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(), ""),
        (text("plain"), "plain"),
        (AnyValue(bool_value=True), "true"),
        (AnyValue(int_value=-42), "-42"),
        (AnyValue(double_value=100.0), "100"),
        (AnyValue(double_value=0.5), "0.5"),
        (AnyValue(double_value=1e21), "1e+21"),
        (AnyValue(double_value=1e20), "100000000000000000000"),
        (AnyValue(double_value=1.5e-7), "1.5e-7"),
        (AnyValue(double_value=1e-6), "0.000001"),
        (AnyValue(double_value=-0.0), "-0"),
        (AnyValue(double_value=math.inf), "json: unsupported value: +Inf"),
        (AnyValue(double_value=math.nan), "json: unsupported value: NaN"),
        (AnyValue(bytes_value=b"\x00\xff"), "AP8="),
        (
            array(
                text("<a&b>"), AnyValue(), AnyValue(double_value=2.0), AnyValue(bytes_value=b"x")
            ),
            '["\\u003ca\\u0026b\\u003e",null,2,"eA=="]',
        ),
        (array(AnyValue(double_value=math.inf)), ""),
    ],
)
def test_any_value_to_string_is_the_collectors_as_string(value: AnyValue, expected: str) -> None:
    assert any_value_to_string(value) == expected


def test_kvlist_body_is_compact_json_with_sorted_keys() -> None:
    body = AnyValue()
    body.kvlist_value.values.add(key="z", value=AnyValue(int_value=1))
    body.kvlist_value.values.add(key="a", value=array(AnyValue(bool_value=False)))
    [got] = decode_otlp_logs(logs_request([], body=body), PB, "t")
    assert got.line == '{"a":[false],"z":1}'


@pytest.mark.parametrize(
    ("log", "fragment"),
    [
        ({"trace_id": b"\x01" * 15}, "logRecords[0].traceId must be 16 bytes"),
        ({"span_id": b"\x01" * 9}, "logRecords[0].spanId must be 8 bytes"),
        ({"time_unix_nano": 2**63}, "int64"),
    ],
)
def test_otlp_log_errors(log: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PushError) as caught:
        decode_otlp_logs(logs_request([], **log), PB, "t")
    assert fragment in str(caught.value)


def test_otlp_log_ids_all_zero_count_as_unset_and_json_ids_must_be_hex() -> None:
    [got] = decode_otlp_logs(logs_request([], trace_id=bytes(16), span_id=bytes(8)), PB, "t")
    assert "trace_id" not in got.metadata
    doc = {
        "resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "S/k vNXezbaOzkp0ODkc2"}]}]}]
    }
    with pytest.raises(
        PushError, match=r"resourceLogs\[0\].scopeLogs\[0\].logRecords\[0\].traceId must be hex"
    ):
        decode_otlp_logs(push_json(doc), JSON, "t")
    snake = {
        "resource_logs": [
            {
                "scope_logs": [
                    {"log_records": [{"trace_id": TRACE_ID, "body": {"stringValue": "x"}}]}
                ]
            }
        ]
    }
    [got] = decode_otlp_logs(push_json(snake), JSON, "t")
    assert (got.line, got.metadata["trace_id"]) == ("x", TRACE_ID)


def test_otlp_rejects_other_content_types() -> None:
    with pytest.raises(PushError, match="'text/plain' is not supported"):
        decode_otlp_logs(b"", "text/plain", "t")


# --- OTLP traces and Tempo ----------------------------------------------------------------


def sdk_spans() -> ExportTraceServiceRequest:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bfm.test", "1.0")
    with tracer.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER) as producer:
        producer.set_attribute("ids", [1, 2])
        producer.add_event("queued", {"depth": 3, "ratio": 0.5})
        link = trace.Link(producer.get_span_context(), {"why": "delayed"})
    with tracer.start_as_current_span("decide", kind=trace.SpanKind.SERVER, links=[link]) as decide:
        decide.set_status(trace.Status(trace.StatusCode.ERROR, "site a lost"))
        decide.set_attribute("ok", False)
    return encode_spans(exporter.get_finished_spans())


@pytest.mark.parametrize("encoding", [PB, JSON])
def test_sdk_spans_decode(encoding: str) -> None:
    request = sdk_spans()
    body = request.SerializeToString() if encoding == PB else otlp_json(request)
    publish, decide = decode_otlp_traces(body, encoding, "t")
    raw = request.resource_spans[0].scope_spans[0].spans
    assert (publish.trace_id, publish.span_id) == (raw[0].trace_id.hex(), raw[0].span_id.hex())
    assert (publish.name, publish.kind, publish.status, publish.parent_span_id) == (
        "publish",
        "producer",
        "unset",
        "",
    )
    assert publish.attributes == {"ids": "[1,2]"}
    assert publish.events == (
        SpanEvent(raw[0].events[0].time_unix_nano, "queued", {"depth": 3, "ratio": 0.5}),
    )
    assert (publish.service, publish.resource["site"], publish.start_ns) == (
        "router",
        "a",
        raw[0].start_time_unix_nano,
    )
    assert (decide.kind, decide.status, decide.status_message) == ("server", "error", "site a lost")
    assert decide.links == (SpanLink(publish.trace_id, publish.span_id, {"why": "delayed"}),)
    assert decide.attributes == {"ok": False}


@pytest.mark.parametrize(
    ("span", "fragment"),
    [
        ({"trace_id": b"\x01" * 8, "span_id": b"\x01" * 8}, "spans[0].traceId must be 16 bytes"),
        ({"trace_id": bytes(16), "span_id": b"\x01" * 8}, "traceId is all zeros"),
        ({"trace_id": b"\x01" * 16, "span_id": b""}, "spans[0].spanId must be 8 bytes"),
        (
            {"trace_id": b"\x01" * 16, "span_id": b"\x01" * 8, "parent_span_id": b"\x01"},
            "parentSpanId",
        ),
    ],
)
def test_span_id_errors(span: dict[str, Any], fragment: str) -> None:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(**span)
    with pytest.raises(PushError) as caught:
        decode_otlp_traces(request.SerializeToString(), PB, "t")
    assert fragment in str(caught.value)


attribute_values = st.one_of(st.text(max_size=8), st.booleans(), int64s, st.floats(allow_nan=False))
attribute_maps = st.dictionaries(st.text(max_size=6), attribute_values, max_size=3)
hex_ids_of = st.builds(lambda n: n.hex(), st.binary(min_size=16, max_size=16).filter(any))
span_ids = st.builds(lambda n: n.hex(), st.binary(min_size=8, max_size=8).filter(any))


@st.composite
def span_records(draw: st.DrawFn) -> SpanRecord:
    service = draw(st.sampled_from(["", "router", "controller"]))
    resource = draw(
        st.dictionaries(st.sampled_from(["site", "host.name"]), st.sampled_from(["a", "b"]))
    )
    if service:
        resource["service.name"] = service
    return SpanRecord(
        tenant="t",
        trace_id=draw(hex_ids_of),
        span_id=draw(span_ids),
        parent_span_id=draw(st.one_of(st.just(""), span_ids)),
        name=draw(st.text(max_size=10)),
        kind=draw(
            st.sampled_from(["unspecified", "internal", "server", "client", "producer", "consumer"])
        ),
        start_ns=draw(st.integers(0, 2**63 - 1)),
        end_ns=draw(st.integers(0, 2**63 - 1)),
        service=service,
        attributes=draw(attribute_maps),
        resource=resource,
        status=draw(st.sampled_from(["unset", "ok", "error"])),
        status_message=draw(st.text(max_size=8)),
        events=tuple(
            draw(
                st.lists(
                    st.builds(
                        SpanEvent, st.integers(0, 2**63 - 1), st.text(max_size=5), attribute_maps
                    ),
                    max_size=2,
                )
            )
        ),
        links=tuple(
            draw(st.lists(st.builds(SpanLink, hex_ids_of, span_ids, attribute_maps), max_size=2))
        ),
    )


def grouped_by_resource(spans: Sequence[SpanRecord]) -> list[SpanRecord]:
    keys = [json.dumps(sorted(s.resource.items()), default=repr) for s in spans]
    first = {key: i for i, key in reversed(list(enumerate(keys)))}
    return [s for _, s in sorted(zip(keys, spans, strict=True), key=lambda p: first[p[0]])]


@settings(max_examples=200)
@given(st.lists(span_records(), max_size=6), st.sampled_from(["hex", "base64"]))
def test_tempo_json_round_trip(spans: list[SpanRecord], id_encoding: Any) -> None:
    doc = json.loads(json.dumps(spans_to_tempo_json(spans, id_encoding=id_encoding)))
    assert decode_tempo_json(doc, "t") == grouped_by_resource(spans)


def test_tempo_shapes_v1_v2_and_tempo_own_encoding() -> None:
    [span] = decode_otlp_traces(sdk_spans().SerializeToString(), PB, "t")[:1]
    doc = spans_to_tempo_json([span, span])
    assert len(doc["batches"]) == 1 and len(doc["batches"][0]["scopeSpans"][0]["spans"]) == 2
    assert doc["batches"][0]["scopeSpans"][0]["spans"][0]["traceId"] == span.trace_id
    v2 = {"trace": {"resourceSpans": doc["batches"]}, "status": "COMPLETE"}
    assert decode_tempo_json(v2, "t") == [span, span]
    tempo_own = {  # what Tempo 2.x returns: base64 ids, enum names, the pre-1.0 scope name
        "batches": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "db"}}]
                },
                "instrumentationLibrarySpans": [
                    {
                        "spans": [
                            {
                                "traceId": base64.b64encode(bytes.fromhex(TRACE_ID)).decode(),
                                "spanId": base64.b64encode(bytes.fromhex(SPAN_ID)).decode(),
                                "name": "query",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": 2,
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [got] = decode_tempo_json(tempo_own, "t")
    assert (got.trace_id, got.span_id, got.kind, got.status, got.service) == (
        TRACE_ID,
        SPAN_ID,
        "client",
        "error",
        "db",
    )
    assert decode_tempo_json({"trace": {}}, "t") == []


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"trace": []}, '"trace" must be an object'),
        ({"batches": {}}, "ExportTraceServiceRequest"),
        ({"batches": [{"scopeSpans": [{"spans": [{"traceId": "!!"}]}]}]}, "neither hex nor base64"),
        (
            {
                "batches": [
                    {
                        "scopeSpans": [
                            {"spans": [{"traceId": TRACE_ID, "startTimeUnixNano": "soon"}]}
                        ]
                    }
                ]
            },
            "startTimeUnixNano",
        ),
    ],
)
def test_tempo_json_errors(doc: Any, fragment: str) -> None:
    with pytest.raises(PushError) as caught:
        decode_tempo_json(doc, "t")
    assert fragment in str(caught.value)


# --- fuzzing: malformed input raises PushError and nothing else ---------------------------

DECODERS: list[Callable[[bytes], object]] = [
    lambda b: decode_loki_json(b, "t"),
    lambda b: decode_loki_protobuf(b, "t"),
    lambda b: decode_loki_protobuf(bytes(cramjam.snappy.compress_raw(b)), "t"),
    lambda b: decode_otlp_logs(b, PB, "t"),
    lambda b: decode_otlp_logs(b, JSON, "t"),
    lambda b: decode_otlp_traces(b, PB, "t"),
    lambda b: decode_otlp_traces(b, JSON, "t"),
    lambda b: decompress(b, "gzip"),
    lambda b: decompress(b, "deflate"),
    lambda b: parse_label_set(b.decode("utf-8", "replace")),
]


def only_push_errors(decode: Callable[[bytes], object], body: bytes) -> None:
    with contextlib.suppress(PushError):
        decode(body)


@settings(max_examples=200)
@given(st.sampled_from(DECODERS), st.binary(max_size=200))
def test_random_bytes_raise_only_push_errors(
    decode: Callable[[bytes], object], body: bytes
) -> None:
    only_push_errors(decode, body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from(["1", TRACE_ID, SPAN_ID, "AAAA"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "streams",
                    "stream",
                    "values",
                    "resourceLogs",
                    "scopeLogs",
                    "logRecords",
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "batches",
                    "trace",
                    "traceId",
                    "spanId",
                    "links",
                    "attributes",
                    "body",
                    "value",
                    "kind",
                    "a",
                ]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200)
@given(st.sampled_from(DECODERS[:1] + DECODERS[4:7:2]), json_values)
def test_random_json_raises_only_push_errors(decode: Callable[[bytes], object], doc: Any) -> None:
    only_push_errors(decode, push_json(doc))


@settings(max_examples=200)
@given(json_values)
def test_random_tempo_documents_raise_only_push_errors(doc: Any) -> None:
    with contextlib.suppress(PushError):
        decode_tempo_json(doc, "t")


def test_deep_nesting_is_a_push_error_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for decode in (DECODERS[0], DECODERS[4], DECODERS[6]):
        with pytest.raises(PushError):
            decode(deep)
