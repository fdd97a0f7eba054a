"""W3C trace context as BFM carries it: a ``traceparent`` string inside backbone messages,
ownership documents and grants files (ARCHITECTURE.md section 5).

These helpers work whether or not telemetry was configured: without it the OpenTelemetry
API hands out non-recording spans, whose contexts still carry (and pass on) the ids they
were given, so a message's trace id survives a hop through an uninstrumented process.
"""

from __future__ import annotations

import re

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, TraceFlags

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def traceparent_of(span: Span | None = None) -> str:
    """The ``traceparent`` of ``span`` (default: the current span), or "" when it has none."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_context_of(traceparent: str) -> SpanContext | None:
    """The remote span context a ``traceparent`` names, or None when it is empty or bad."""
    match = _TRACEPARENT.match(traceparent or "")
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match.group(3), 16))
    )


def context_of(traceparent: str) -> Context | None:
    """A parent context for a span continuing the trace of ``traceparent`` (None: start a
    new trace)."""
    ctx = span_context_of(traceparent)
    return None if ctx is None else trace.set_span_in_context(NonRecordingSpan(ctx))


def link_to(traceparent: str, **attributes: str | int) -> Link | None:
    """A span link to the span ``traceparent`` names (None when it names none)."""
    ctx = span_context_of(traceparent)
    return None if ctx is None else Link(ctx, attributes=attributes or None)


_ODD_HEX = frozenset("13579bdf")


def is_sampled(traceparent: str) -> bool:
    """Whether the sender sampled this trace: the low (sampled) bit of the flags, the fast
    path for hot code that records spans only for sampled messages. Other bits may be set
    (the SDK sets W3C level 2's random-trace-id bit: flags ``03``)."""
    return len(traceparent) == 55 and traceparent[-1] in _ODD_HEX


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id of a ``traceparent`` ("" when it is empty or bad)."""
    match = _TRACEPARENT.match(traceparent or "")
    return match.group(1) if match else ""
