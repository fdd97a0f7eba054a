"""OTLP/HTTP logs and traces (protobuf or JSON), as records.

Logs are mapped the way Loki's ``/otlp/v1/logs`` maps them by default
(https://grafana.com/docs/loki/latest/send-data/otel/#format-considerations, and
grafana/loki ``pkg/loghttp/push/otlp.go``, ``otlp_config.go``):

* index labels: the resource attributes named in ``INDEX_LABEL_ATTRIBUTES``; when
  ``service.name`` is missing or empty, ``service_name`` is taken from the first such
  label named in ``DISCOVER_SERVICE_NAME`` (e.g. ``container_name``), else it is
  ``unknown_service``; labels with empty values are dropped, as Loki drops them;
* structured metadata: the other resource attributes, the scope's attributes and its
  ``scope_name``/``scope_version``/``scope_dropped_attributes_count``, the log record's
  attributes, ``severity_text``, ``severity_number`` (when not 0), ``trace_id`` and
  ``span_id`` (lowercase hex, when set), ``flags`` and ``dropped_attributes_count`` (when not
  0) and ``observed_timestamp`` (when both timestamps are set); on a name clash the log
  record wins over the scope, which wins over the resource;
* names: characters outside ``[a-zA-Z0-9_]`` become ``_`` (``service.name`` ->
  ``service_name``), a leading digit gets ``key_``, a single leading ``_`` gets ``key``;
  nested maps flatten with ``_`` between the keys;
* values and the line: ``AsString`` of the OpenTelemetry collector (strings as they are,
  numbers as Go prints them, bytes in base64, arrays and maps as Go's compact JSON);
* time: ``time_unix_nano``, else ``observed_time_unix_nano``, else ``received_ns``.

Bodies are parsed by :mod:`~bfm_observe.logstore.otlp_body` (OTLP/JSON: ids in hex, both
camelCase and snake_case field names, unknown fields ignored). Tempo's trace JSON is in
:mod:`~bfm_observe.logstore.wire_tempo`.

Malformed bodies raise ``PushError``; nothing else escapes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bfm_observe.logstore.otlp_body import parse_body
from bfm_observe.logstore.records import AttributeValue, LogRecord, SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.wire_errors import PushError

INDEX_LABEL_ATTRIBUTES = frozenset(
    (  # noqa: SIM905
        "service.name service.namespace service.instance.id deployment.environment "
        "deployment.environment.name cloud.region cloud.availability_zone k8s.cluster.name "
        "k8s.namespace.name k8s.pod.name k8s.container.name container.name k8s.replicaset.name "
        "k8s.deployment.name k8s.statefulset.name k8s.daemonset.name k8s.cronjob.name "
        "k8s.job.name"
    ).split()
)
"""Loki's ``distributor.otlp.default_resource_attributes_as_index_labels``."""

DISCOVER_SERVICE_NAME = frozenset(
    (  # noqa: SIM905
        "service app application app_name name app_kubernetes_io_name container "
        "container_name k8s_container_name component workload job k8s_job_name"
    ).split()
)
"""Loki's default ``validation.discover-service-name`` label names."""

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")

_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_INT64_MAX = 2**63 - 1


def decode_otlp_logs(
    body: bytes, content_type: str, tenant: str, *, received_ns: int = 0
) -> list[LogRecord]:
    """Decode an ``ExportLogsServiceRequest`` (already decompressed) into Loki's model, as
    the module docstring says. ``received_ns`` is the time of a record with no timestamp."""
    request = parse_body(body, content_type, ExportLogsServiceRequest)
    records: list[LogRecord] = []
    for ri, resource_logs in enumerate(request.resource_logs):
        labels, resource_meta = _resource_labels(resource_logs.resource.attributes)
        for si, scope_logs in enumerate(resource_logs.scope_logs):
            scope = scope_logs.scope
            scope_meta = _flatten(scope.attributes)
            extra = (("scope_name", scope.name), ("scope_version", scope.version))
            scope_meta.update((k, v) for k, v in extra if v)
            if scope.dropped_attributes_count:
                scope_meta["scope_dropped_attributes_count"] = str(scope.dropped_attributes_count)
            for li, log in enumerate(scope_logs.log_records):
                where = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]"
                meta = {**resource_meta, **scope_meta, **_flatten(log.attributes)}
                if log.time_unix_nano and log.observed_time_unix_nano:
                    meta["observed_timestamp"] = str(log.observed_time_unix_nano)
                fields = (
                    ("severity_number", str(log.severity_number) if log.severity_number else ""),
                    ("severity_text", log.severity_text),
                    ("dropped_attributes_count", str(log.dropped_attributes_count or "")),
                    ("flags", str(log.flags or "")),
                    ("trace_id", _hex_id(log.trace_id, 16, f"{where}.traceId", required=False)),
                    ("span_id", _hex_id(log.span_id, 8, f"{where}.spanId", required=False)),
                )
                meta.update((k, v) for k, v in fields if v)
                ts = log.time_unix_nano or log.observed_time_unix_nano or received_ns
                line = any_value_to_string(log.body)
                records.append(LogRecord(tenant, labels, _ns(ts, where), line, meta))
    return records


def _resource_labels(attributes: Sequence[KeyValue]) -> tuple[dict[str, str], dict[str, str]]:
    """(index labels, structured metadata) of a resource, following Loki step by step."""
    labels: dict[str, str] = {}
    metadata: dict[str, str] = {}
    named = next((kv.value for kv in attributes if kv.key == "service.name"), None)
    has_service = named is not None and any_value_to_string(named) != ""
    for kv in attributes:
        if kv.key not in INDEX_LABEL_ATTRIBUTES:
            metadata.update(_flatten([kv]))
            continue
        for name, value in _flatten([kv]).items():
            labels[name] = value
            if not has_service and name in DISCOVER_SERVICE_NAME:
                labels["service_name"], has_service = value, True
    if not has_service:
        labels["service_name"] = "unknown_service"
    return {k: v for k, v in sorted(labels.items()) if v}, metadata


def normalize_label(name: str) -> str:
    """An attribute name as a Loki label name (Prometheus' ``NormalizeLabel``)."""
    name = _NOT_LABEL_CHAR.sub("_", name)
    if name[:1].isdigit():
        return "key_" + name
    return "key" + name if name.startswith("_") and not name.startswith("__") else name


def _flatten(attributes: Iterable[KeyValue], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attributes:
        name = normalize_label(f"{prefix}_{kv.key}" if prefix else kv.key)
        if kv.value.WhichOneof("value") == "kvlist_value":
            out.update(_flatten(kv.value.kvlist_value.values, name))
        else:
            out[name] = any_value_to_string(kv.value)
    return out


def any_value_to_string(value: AnyValue) -> str:
    """The collector's ``pcommon.Value.AsString`` of an OTLP ``AnyValue``."""
    kind = value.WhichOneof("value")
    if kind == "double_value" and not math.isfinite(value.double_value):
        number = value.double_value
        text = "NaN" if math.isnan(number) else "+Inf" if number > 0 else "-Inf"
        return f"json: unsupported value: {text}"
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    try:
        raw = _raw(value)
        return "" if raw is None else _go_json(raw)
    except ValueError:  # Go's json.Marshal refuses NaN and infinities: AsString is ""
        return ""


def _raw(value: AnyValue) -> Any:
    """``AsRaw``: the value as plain Python data (bytes as base64, as Go's JSON has them)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, kind)
    return None


def _go_float(number: float) -> str:
    """A finite float as Go's encoding/json writes it (ES6 number formatting)."""
    if number != 0 and not 1e-6 <= abs(number) < 1e21:
        return re.sub(r"e-0(\d)$", r"e-\1", repr(number))
    text = format(Decimal(repr(number)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _go_json(raw: Any) -> str:
    """Compact JSON as Go's encoding/json writes it: sorted keys, HTML characters escaped."""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError("unsupported value")
        return _go_float(raw)
    if isinstance(raw, list):
        return "[" + ",".join(_go_json(item) for item in raw) + "]"
    if isinstance(raw, dict):
        items = (f"{_go_json(key)}:{_go_json(raw[key])}" for key in sorted(raw))
        return "{" + ",".join(items) + "}"
    text = json.dumps(raw, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def decode_otlp_traces(body: bytes, content_type: str, tenant: str) -> list[SpanRecord]:
    """Decode an ``ExportTraceServiceRequest`` (already decompressed): ids in lowercase hex,
    kinds and status codes as the words of ``SPAN_KINDS``/``STATUS_CODES``, attributes
    flattened by ``attribute_value``, ``service`` from the resource's ``service.name``."""
    request = parse_body(body, content_type, ExportTraceServiceRequest)
    return spans_of(request, tenant)


def spans_of(request: ExportTraceServiceRequest, tenant: str) -> list[SpanRecord]:
    """The spans of a parsed request, as ``decode_otlp_traces`` says (Tempo's JSON too)."""
    spans: list[SpanRecord] = []
    for ri, resource_spans in enumerate(request.resource_spans):
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            for pi, span in enumerate(scope_spans.spans):
                at = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                links = tuple(
                    SpanLink(
                        _hex_id(link.trace_id, 16, f"{at}.links[{i}].traceId"),
                        _hex_id(link.span_id, 8, f"{at}.links[{i}].spanId"),
                        _attributes(link.attributes),
                    )
                    for i, link in enumerate(span.links)
                )
                events = tuple(
                    SpanEvent(_ns(e.time_unix_nano, at), e.name, _attributes(e.attributes))
                    for e in span.events
                )
                spans.append(
                    SpanRecord(
                        tenant=tenant,
                        trace_id=_hex_id(span.trace_id, 16, f"{at}.traceId"),
                        span_id=_hex_id(span.span_id, 8, f"{at}.spanId"),
                        parent_span_id=_hex_id(
                            span.parent_span_id, 8, f"{at}.parentSpanId", required=False
                        ),
                        name=span.name,
                        kind=SPAN_KINDS[span.kind] if 0 <= span.kind < 6 else "unspecified",
                        start_ns=_ns(span.start_time_unix_nano, at),
                        end_ns=_ns(span.end_time_unix_nano, at),
                        service=service if isinstance(service, str) else str(service),
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        status=STATUS_CODES[span.status.code]
                        if 0 <= span.status.code < 3
                        else "unset",
                        status_message=span.status.message,
                        events=events,
                        links=links,
                    )
                )
    return spans


def attribute_value(value: AnyValue) -> AttributeValue:
    """A span attribute as a plain value: strings, booleans, integers and floats as they
    are; bytes in base64; arrays and maps as the JSON text of ``any_value_to_string``."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        result: AttributeValue = getattr(value, kind)
        return result
    return any_value_to_string(value)


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: attribute_value(kv.value) for kv in attributes}


def _hex_id(raw: bytes, size: int, where: str, *, required: bool = True) -> str:
    """A trace id (16 bytes) or span id (8 bytes) in lowercase hex; unset (empty or all
    zero) gives "" where that is allowed."""
    if not raw and not required:
        return ""
    if len(raw) != size:
        raise PushError(f"{where} must be {size} bytes ({2 * size} hex digits), got {len(raw)}")
    if not any(raw):
        if required:
            raise PushError(f"{where} is all zeros, which OTLP defines as invalid")
        return ""
    return raw.hex()


def _ns(value: int, where: str) -> int:
    if value > _INT64_MAX:
        raise PushError(f"{where}: timestamp {value} ns is past the year 2262 (int64 overflow)")
    return value
