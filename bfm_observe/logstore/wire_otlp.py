"""OTLP/HTTP logs and traces (protobuf or JSON) and Tempo's trace JSON, as records.

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

The OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)
has trace and span ids in hex, enums as integers and 64-bit integers as strings; both
camelCase and snake_case field names are read and unknown fields ignored. Tempo's JSON may
also carry ids in base64 (it marshals ids as plain protobuf bytes).

Malformed bodies raise ``PushError``; nothing else escapes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bfm_observe.logstore.records import AttributeValue, LogRecord, SpanEvent, SpanLink, SpanRecord
from bfm_observe.logstore.wire_loki import PushError

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

_M = TypeVar("_M", ExportLogsServiceRequest, ExportTraceServiceRequest)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_INT64_MAX = 2**63 - 1


def decode_otlp_logs(
    body: bytes, content_type: str, tenant: str, *, received_ns: int = 0
) -> list[LogRecord]:
    """Decode an ``ExportLogsServiceRequest`` (already decompressed) into Loki's model, as
    the module docstring says. ``received_ns`` is the time of a record with no timestamp."""
    request = _parse(body, content_type, ExportLogsServiceRequest)
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
    request = _parse(body, content_type, ExportTraceServiceRequest)
    return _spans(request, tenant)


def _spans(request: ExportTraceServiceRequest, tenant: str) -> list[SpanRecord]:
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


def spans_to_tempo_json(
    spans: Sequence[SpanRecord], *, id_encoding: Literal["hex", "base64"] = "hex"
) -> dict[str, Any]:
    """The body of Tempo's ``GET /api/traces/<traceID>``: ``{"batches": [ResourceSpans]}``
    in OTLP/JSON (https://grafana.com/docs/tempo/latest/api_docs/#query), one batch per
    (tenant, resource) in order of first appearance, each with one unnamed scope, spans in
    input order. Ids are hex as OTLP/JSON says (``id_encoding="base64"`` writes them as Tempo
    itself does); enums are integers, 64-bit integers strings. A span's ``service`` is
    written as the resource's ``service.name`` when the resource has none. Tempo's v2 API
    wraps the same list as ``{"trace": {"resourceSpans": [...]}}``."""
    ident: Callable[[str], str] = (
        (lambda h: base64.b64encode(bytes.fromhex(h)).decode("ascii"))
        if id_encoding == "base64"
        else (lambda h: h)
    )
    batches: dict[tuple[Any, ...], tuple[dict[str, AttributeValue], list[dict[str, Any]]]] = {}
    for span in spans:
        resource = dict(span.resource)
        if span.service and "service.name" not in resource:
            resource["service.name"] = span.service
        key = (span.tenant, *sorted((k, type(v).__name__, v) for k, v in resource.items()))
        batch = batches.setdefault(key, (resource, []))[1]
        doc: dict[str, Any] = {
            "traceId": ident(span.trace_id),
            "spanId": ident(span.span_id),
            "name": span.name,
            "kind": SPAN_KINDS.index(span.kind) if span.kind in SPAN_KINDS else 0,
            "startTimeUnixNano": str(span.start_ns),
            "endTimeUnixNano": str(span.end_ns),
            "attributes": _key_values(span.attributes),
            "events": [
                {
                    "timeUnixNano": str(e.ts_ns),
                    "name": e.name,
                    "attributes": _key_values(e.attributes),
                }
                for e in span.events
            ],
            "links": [
                {
                    "traceId": ident(k.trace_id),
                    "spanId": ident(k.span_id),
                    "attributes": _key_values(k.attributes),
                }
                for k in span.links
            ],
            "status": {
                "code": STATUS_CODES.index(span.status) if span.status in STATUS_CODES else 0
            },
        }
        if span.parent_span_id:
            doc["parentSpanId"] = ident(span.parent_span_id)
        if span.status_message:
            doc["status"]["message"] = span.status_message
        batch.append(doc)
    return {
        "batches": [
            {
                "resource": {"attributes": _key_values(resource)},
                "scopeSpans": [{"scope": {}, "spans": docs}],
            }
            for resource, docs in batches.values()
        ]
    }


def _key_values(attributes: Mapping[str, AttributeValue]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _any_value(value)} for key, value in attributes.items()]


def _any_value(value: AttributeValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {
            "doubleValue": value
            if math.isfinite(value)
            else str(value).replace("inf", "Infinity").replace("nan", "NaN")
        }
    return {"stringValue": value}


def decode_tempo_json(doc: Mapping[str, Any], tenant: str) -> list[SpanRecord]:
    """Spans of a Tempo trace-by-id body: v1 ``{"batches": [...]}``, v2
    ``{"trace": {"resourceSpans": [...]}}`` or a plain OTLP ``{"resourceSpans": [...]}``;
    ids in hex or base64; the inverse of ``spans_to_tempo_json`` for spans of ``tenant``."""
    if not isinstance(doc, Mapping):
        raise PushError('a Tempo trace must be a JSON object with "batches" or "trace"')
    trace = doc.get("trace", doc)
    if not isinstance(trace, Mapping):
        raise PushError('"trace" must be an object with "resourceSpans"')
    batches: Any = next(
        (trace[k] for k in ("batches", "resourceSpans", "resource_spans") if k in trace), []
    )
    request = _from_dict(
        {"resourceSpans": [] if batches is None else batches},
        ExportTraceServiceRequest,
        allow_base64=True,
    )
    return _spans(request, tenant)


def _parse(body: bytes, content_type: str, cls: type[_M], allow_base64: bool = False) -> _M:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-protobuf":
        message = cls()
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise PushError(f"body is not a valid protobuf {cls.__name__} ({exc})") from None
        return message
    if media == "application/json":
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise PushError(f"body is not valid JSON ({exc})") from None
        return _from_dict(doc, cls, allow_base64)
    raise PushError(
        f"content type {content_type!r} is not supported; OTLP/HTTP accepts "
        "application/x-protobuf or application/json"
    )


def _from_dict(doc: Any, cls: type[_M], allow_base64: bool) -> _M:
    if not isinstance(doc, dict):
        raise PushError(f"an OTLP/JSON {cls.__name__} must be a JSON object")
    try:
        message, fixed = cls(), _base64_ids(doc, allow_base64)
    except RecursionError:
        raise PushError(f"OTLP/JSON {cls.__name__} is nested too deeply") from None
    try:
        json_format.ParseDict(fixed, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise PushError(f"body is not a valid OTLP/JSON {cls.__name__} ({exc})") from None
    return message


_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"))
_OLD_NAMES = {
    "instrumentationLibrarySpans": "scopeSpans",
    "instrumentation_library_spans": "scopeSpans",
    "instrumentationLibraryLogs": "scopeLogs",
    "instrumentation_library_logs": "scopeLogs",
}


def _base64_ids(node: Any, allow_base64: bool, where: str = "") -> Any:
    """A copy of an OTLP/JSON document with its trace and span ids in base64, which is how
    ``json_format`` reads bytes (OTLP/JSON has them in hex), and the pre-1.0 name of the
    scope level (``instrumentationLibrarySpans``, in older Tempo answers) renamed. Those
    keys name ids wherever they occur: attribute names are values of "key", never keys."""
    if isinstance(node, list):
        return [_base64_ids(item, allow_base64, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        at = f"{where}.{key}" if where else str(key)
        if key in _ID_KEYS:
            out[key] = _base64_id(value, at, allow_base64)
        else:
            out[_OLD_NAMES.get(key, key)] = _base64_ids(value, allow_base64, at)
    return out


def _base64_id(value: Any, where: str, allow_base64: bool) -> Any:
    if not isinstance(value, str):
        return value  # json_format names the wrong type
    if _HEX.fullmatch(value):
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    if allow_base64:
        try:
            base64.b64decode(value, validate=True)
            return value
        except binascii.Error:
            raise PushError(f"{where} is neither hex nor base64: {value!r}") from None
    raise PushError(f"{where} must be hex (OTLP/JSON ids are hex, not base64), got {value!r}")


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
