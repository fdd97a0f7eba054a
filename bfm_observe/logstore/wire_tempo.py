"""Tempo's trace JSON: stored spans as the body of ``GET /api/traces/<id>``, and back.

Tempo answers in OTLP/JSON (https://grafana.com/docs/tempo/latest/api_docs/#query): v1
``{"batches": [ResourceSpans]}``, v2 ``{"trace": {"resourceSpans": [...]}}``. Ids are hex
as OTLP/JSON says, though Tempo itself writes (and may answer with) base64.

Malformed bodies raise ``PushError``; nothing else escapes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bfm_observe.logstore.otlp_body import message_from_dict
from bfm_observe.logstore.records import AttributeValue, SpanRecord
from bfm_observe.logstore.wire_errors import PushError
from bfm_observe.logstore.wire_otlp import SPAN_KINDS, STATUS_CODES, spans_of


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
    request = message_from_dict(
        {"resourceSpans": [] if batches is None else batches},
        ExportTraceServiceRequest,
        allow_base64=True,
    )
    return spans_of(request, tenant)
