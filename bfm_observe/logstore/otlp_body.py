"""OTLP/HTTP request bodies, protobuf or OTLP/JSON, parsed into protobuf messages.

The OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)
has trace and span ids in hex, enums as integers and 64-bit integers as strings; both
camelCase and snake_case field names are read and unknown fields ignored. Tempo's JSON may
also carry ids in base64 (it marshals ids as plain protobuf bytes): ``allow_base64``.

Malformed bodies raise ``PushError``; nothing else escapes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bfm_observe.logstore.wire_errors import PushError

_M = TypeVar("_M", ExportLogsServiceRequest, ExportTraceServiceRequest)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def parse_body(body: bytes, content_type: str, cls: type[_M], allow_base64: bool = False) -> _M:
    """A request (already decompressed) by its media type: protobuf or OTLP/JSON."""
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
        return message_from_dict(doc, cls, allow_base64)
    raise PushError(
        f"content type {content_type!r} is not supported; OTLP/HTTP accepts "
        "application/x-protobuf or application/json"
    )


def message_from_dict(doc: Any, cls: type[_M], allow_base64: bool) -> _M:
    """A request from a decoded OTLP/JSON document (ids in hex, or base64 if allowed)."""
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
