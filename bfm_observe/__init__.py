"""Instrumentation any HEMISPHERE component imports. Importing configures nothing.

``configure(component=..., site=...)`` sets up traces (OTLP), metrics (Prometheus, with
exemplars in OpenMetrics), JSON logs carrying trace ids, and optional Loki shipping;
``shutdown()`` undoes it (ARCHITECTURE.md section 5).
"""

from bfm_observe.propagation import (
    context_of,
    is_sampled,
    link_to,
    span_context_of,
    trace_id_of,
    traceparent_of,
)
from bfm_observe.setup import Telemetry, configure, current, shutdown
from bfm_observe.tracing import exemplar

__all__ = [
    "Telemetry",
    "configure",
    "context_of",
    "current",
    "exemplar",
    "is_sampled",
    "link_to",
    "shutdown",
    "span_context_of",
    "trace_id_of",
    "traceparent_of",
]
