"""What the log store keeps: log lines and spans, as the push decoders hand them over.

Both are plain values, independent of the wire format they came in (Loki JSON, Loki
protobuf+snappy, OTLP/HTTP protobuf or JSON) and of the storage (SQLite).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_TENANT = "fake"
"""The tenant of requests without ``X-Scope-OrgID`` when multi-tenancy is off, as in Loki
(``auth_enabled: false`` puts everything under the tenant ``fake``)."""

AttributeValue = str | int | float | bool


@dataclass(frozen=True)
class LogRecord:
    """One log line of one stream: its labels, time, text and structured metadata."""

    tenant: str
    labels: Mapping[str, str]
    ts_ns: int
    line: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanEvent:
    ts_ns: int
    name: str
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanLink:
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """One finished span, as OTLP describes it (ids in lowercase hex)."""

    tenant: str
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: str  # "" for a root span
    name: str
    kind: str  # "internal", "server", "client", "producer", "consumer" or "unspecified"
    start_ns: int
    end_ns: int
    service: str  # the resource's service.name ("" when absent)
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    resource: Mapping[str, AttributeValue] = field(default_factory=dict)
    status: str = "unset"  # "unset", "ok" or "error"
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
