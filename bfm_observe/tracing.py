"""Traces: one SDK TracerProvider per process, whose sampler, span processor and resource
can be swapped behind it.

OpenTelemetry lets a process set its global tracer provider once. ``configure`` installs
ours the first time and only swaps what sits behind it afterwards, so ``configure`` ->
``shutdown`` -> ``configure`` (tests, with other receivers) works, and tracers obtained
earlier with ``trace.get_tracer("bfm")`` follow along.

Sampling: ``ParentBased(root=BfmRootSampler(ratio))``. The root sampler always samples
spans started with ``bfm.kind="alarm"`` or ``bfm.always_sample=True`` (controller
decisions), else ``TraceIdRatioBased(ratio)``. ``OTEL_TRACES_SAMPLER`` is honoured when no
explicit ``sample_ratio`` is given: ``always_on``/``traceidratio`` drop the parent-based
wrapper; ``always_off`` and ``parentbased_always_off`` mean "no traces": they sample
nothing, alarms included (an operator's explicit off switch wins over the alarm rule).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Attributes as ResourceAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler

from bfm_observe.redaction import redacted_span
from bfm_observe.sampling import BfmRootSampler, SwitchableSampler

DEFAULT_SAMPLE_RATIO = 0.01
"""Share of root traces sampled when nothing else says; alarms and decisions always are."""

EXPORT_TIMEOUT_S = 2.0
NAMESPACE = "hemisphere"
_log = logging.getLogger(__name__)


class _SwitchableProcessor(SpanProcessor):
    """The provider's span processor: forwards to the current BatchSpanProcessor, if any."""

    def __init__(self) -> None:
        self.inner: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        inner = self.inner
        if inner is not None:
            inner.on_end(redacted_span(span))  # no secret leaves in an attribute

    def shutdown(self) -> None:
        inner, self.inner = self.inner, None
        if inner is not None:
            inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        inner = self.inner
        return True if inner is None else inner.force_flush(timeout_millis)


class _LiveResource(Resource):
    """A resource that shows the current configuration's attributes: tracers cache the
    provider's resource object, so the object stays and its contents follow ``configure``.
    (A fork replaces it with a snapshot: the SDK merges process attributes in the child.)"""

    def __init__(self) -> None:
        super().__init__({})
        self.current = Resource.get_empty()

    @property
    def attributes(self) -> ResourceAttributes:
        return self.current.attributes

    @property
    def schema_url(self) -> str:
        return self.current.schema_url

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


_SAMPLER = SwitchableSampler(ParentBased(root=BfmRootSampler(DEFAULT_SAMPLE_RATIO)))
_PROCESSOR = _SwitchableProcessor()
_RESOURCE = _LiveResource()
_PROVIDER: TracerProvider | None = None
_INSTALL_LOCK = threading.Lock()


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def build_resource(component: str, site: str, instance_id: str) -> Resource:
    """Our attributes over OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME when no
    component is given)."""
    attrs: dict[str, str] = {
        "service.namespace": NAMESPACE,
        "service.instance.id": instance_id,
        "bfm.site": site,
        "cloud.availability_zone": site,
    }
    if component:
        attrs["service.name"] = component
    return Resource.create(attrs)


def _env_ratio() -> float:
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not raw:
        return DEFAULT_SAMPLE_RATIO
    try:
        return float(raw)
    except ValueError:
        _log.warning(
            "OTEL_TRACES_SAMPLER_ARG=%r is not a number; using %s", raw, DEFAULT_SAMPLE_RATIO
        )
        return DEFAULT_SAMPLE_RATIO


def resolve_sampler(sample_ratio: float | None) -> Sampler:
    """The sampler for an explicit ratio, else for OTEL_TRACES_SAMPLER(_ARG)."""
    if sample_ratio is not None:
        return ParentBased(root=BfmRootSampler(sample_ratio))
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    choices: dict[str, Sampler] = {
        "always_on": BfmRootSampler(1.0),
        "always_off": ALWAYS_OFF,
        "parentbased_always_on": ParentBased(root=BfmRootSampler(1.0)),
        "parentbased_always_off": ParentBased(root=ALWAYS_OFF),
    }
    if name in choices:
        return choices[name]
    if name == "traceidratio":
        return BfmRootSampler(_env_ratio())
    if name not in {"", "parentbased_traceidratio"}:
        _log.warning(
            "OTEL_TRACES_SAMPLER=%r is not supported; using parentbased_traceidratio", name
        )
    return ParentBased(root=BfmRootSampler(_env_ratio()))


def resolve_endpoint(otlp_endpoint: str | None) -> str | None:
    """The full /v1/traces URL to export to, or None (spans stay in-process). An explicit
    base URL wins over OTEL_TRACES_EXPORTER=none and the OTEL_EXPORTER_OTLP_* variables."""
    if otlp_endpoint:
        return otlp_endpoint.rstrip("/") + "/v1/traces"
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    full = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if full:
        return full
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def _global_provider() -> TracerProvider:
    """Our provider, installed as the global one on first use (if another provider got
    there first, ours still serves ``Telemetry.tracer``)."""
    global _PROVIDER  # noqa: PLW0603 - one provider per process, by OpenTelemetry's rule
    with _INSTALL_LOCK:
        if _PROVIDER is None:
            _PROVIDER = TracerProvider(sampler=_SAMPLER, resource=_RESOURCE)
            _PROVIDER.add_span_processor(_PROCESSOR)
            trace.set_tracer_provider(_PROVIDER)
        if trace.get_tracer_provider() is not _PROVIDER:
            _log.warning("another tracer provider is global: bfm spans go to ours only")
        return _PROVIDER


EXPORT_INTERVAL_MS = 500
EXPORT_BATCH_SPANS = 64
"""Small, frequent exports: encoding a batch holds the GIL, and a 512-span batch every 5 s
(the SDK's defaults) stalled the router's event loop for tens of milliseconds each time;
64 spans every 0.5 s costs the same CPU in short slices. ``OTEL_BSP_SCHEDULE_DELAY`` and
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` still override them."""


def _batch_defaults() -> tuple[int | None, int | None]:
    """(schedule delay ms, batch size): ours, or None where an OTEL_BSP_* variable says
    (the SDK then reads it)."""
    delay = None if "OTEL_BSP_SCHEDULE_DELAY" in os.environ else EXPORT_INTERVAL_MS
    batch = None if "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in os.environ else EXPORT_BATCH_SPANS
    return delay, batch


def install(resource: Resource, sampler: Sampler, endpoint: str | None) -> trace.Tracer:
    """Point the process's provider at this configuration; returns the "bfm" tracer."""
    if sdk_disabled():
        _SAMPLER.inner = ALWAYS_OFF
        uninstall().join(EXPORT_TIMEOUT_S)
        return trace.NoOpTracer()
    provider = _global_provider()
    _RESOURCE.current = resource
    _SAMPLER.inner = sampler
    uninstall().join(EXPORT_TIMEOUT_S)
    if endpoint is not None:
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
        delay_ms, batch = _batch_defaults()
        _PROCESSOR.inner = BatchSpanProcessor(
            exporter,
            export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
            schedule_delay_millis=delay_ms,
            max_export_batch_size=batch,
        )
    return provider.get_tracer("bfm")


def _in_background(work: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


def uninstall() -> threading.Thread:
    """Stop exporting; the returned thread flushes the ended spans (join it with a timeout:
    a dead collector costs the exporter's timeout per batch, and the SDK offers no overall
    bound). The provider stays: OpenTelemetry keeps it global."""
    inner, _PROCESSOR.inner = _PROCESSOR.inner, None
    return _in_background(inner.shutdown if inner else lambda: None, "bfm-span-flush")


def force_flush(timeout_s: float = 5.0) -> bool:
    """Export the ended spans now; False if that took longer than ``timeout_s``."""
    inner = _PROCESSOR.inner
    if inner is None:
        return True
    thread = _in_background(inner.force_flush, "bfm-span-flush")
    thread.join(timeout_s)
    return not thread.is_alive()


def exemplar(span: trace.Span | None = None) -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of ``span`` (default: the current span) when it is
    valid and sampled."""
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def live_sampler() -> Sampler:
    """The sampler of the current configuration (what the provider asks)."""
    return _SAMPLER
