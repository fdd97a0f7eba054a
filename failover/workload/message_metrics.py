"""Message metrics and trace helpers of the backbone's processes, cheap on the hot path.

Counters are tallied per batch in a dict and added to prometheus-client once per label set
(``Tally``): a labelled increment costs about a microsecond, a dict increment a tenth of
that. Latency histograms keep their children per kind (``Latency``) and take a batch of
equal latencies in one step (``observe_many``: a module commits a batch at one moment).
Exemplars carry the trace id of a sampled message, as ``bfm_observe`` does.

``HealthCounters`` keep what a component reports of itself on the site's liveness ping
(``failover.core.versions.ComponentHealth``), as plain integers added to per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer
from prometheus_client import Counter, Histogram
from prometheus_client.samples import Exemplar

from bfm_observe.propagation import is_sampled
from bfm_observe.tracing import exemplar
from failover import telemetry
from failover.core.versions import LATENCY_BOUNDS_S, ComponentHealth, latency_bucket

__all__ = ["is_sampled"]

REFUSAL_REASONS = frozenset(
    {
        "not-owner",
        "stale-epoch",
        "lease-expired",
        "no-owner",
        "malformed",
        "wrong-module",
        "module-unreachable",
        "router-unreachable",
        "ledger-error",
        "bad-answer",
        "version-error",
        "overloaded",
    }
)
"""Every refusal reason the backbone answers with; a label takes these or ``other``."""

STALE_REASONS = frozenset({"stale-epoch", "lease-expired", "not-owner"})
"""Refusals counted as ``bfm_stale_epoch_refusals`` too (work the site may not do now)."""


OWN_FAULT_REASONS = frozenset({"version-error", "ledger-error"})
"""Refusals that are the refusing component's own fault: its health counts them as errors.
The others are the protocol working (ownership, fencing), the sender's fault (malformed,
wrong-module) or another component's (unreachable)."""


def reason_label(reason: str) -> str:
    """The ``outcome`` label of a refusal: its reason, or ``other`` (labels stay bounded)."""
    return reason if reason in REFUSAL_REASONS else "other"


class Tally:
    """Increments of one counter by label values, added to it in one step per batch."""

    def __init__(self, counter: Counter, *fixed: str) -> None:
        self._counter, self._fixed = counter, fixed
        self.counts: dict[tuple[str, ...], int] = {}
        self._children: dict[tuple[str, ...], Counter] = {}

    def add(self, *labels: str, n: int = 1) -> None:
        self.counts[labels] = self.counts.get(labels, 0) + n

    def flush(self) -> None:
        if not self.counts:
            return
        counts, self.counts = self.counts, {}
        for labels, n in counts.items():
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self._counter.labels(*self._fixed, *labels)
            child.inc(n)


def messages(site: str, component: str) -> Tally:
    """``bfm_messages_total{site, component, kind, outcome}``, tallied."""
    return Tally(telemetry.MESSAGES, site, component)


class Latency:
    """``bfm_message_duration_seconds{site, component, kind}``, its children kept per kind."""

    def __init__(self, site: str, component: str) -> None:
        self.site, self.component = site, component
        self._children: dict[str, Histogram] = {}

    def child(self, kind: str) -> Histogram:
        child = self._children.get(kind)
        if child is None:
            child = self._children[kind] = telemetry.MESSAGE_SECONDS.labels(
                self.site, self.component, kind
            )
        return child

    def observe(self, kind: str, seconds: float, exemplar: dict[str, str] | None = None) -> None:
        self.child(kind).observe(seconds, exemplar)

    def observe_many(
        self, kind: str, seconds: float, n: int, exemplar: dict[str, str] | None = None
    ) -> None:
        """``n`` observations of the same latency, at the cost of one."""
        observe_many(self.child(kind), seconds, n, exemplar)


def observe_many(
    child: Histogram, seconds: float, n: int, exemplar: dict[str, str] | None = None
) -> None:
    """What ``n`` calls of ``child.observe(seconds)`` record, in one step.

    prometheus-client has no weighted observation; this adds ``n`` to the bucket and
    ``n * seconds`` to the sum through the child's value objects (the ones ``observe``
    updates), and falls back to ``n`` observations if a release lays them out otherwise
    (tests/unit/test_workload_telemetry.py compares both ways)."""
    if n <= 0:
        return
    child_any: Any = child
    buckets = getattr(child_any, "_buckets", None)
    bounds = getattr(child_any, "_upper_bounds", None)
    total = getattr(child_any, "_sum", None)
    if n == 1 or buckets is None or bounds is None or total is None:
        for i in range(n):
            child.observe(seconds, exemplar if i == 0 else None)
        return
    total.inc(seconds * n)
    for i, bound in enumerate(bounds):
        if seconds <= bound:
            buckets[i].inc(n)
            if exemplar:
                buckets[i].set_exemplar(Exemplar(exemplar, seconds, time.time()))
            break


def exemplar_of(span: Span | None) -> dict[str, str] | None:
    """The exemplar of a message's span (``bfm_observe.exemplar()`` for it): its trace and
    span ids when it is sampled, else None."""
    return None if span is None else exemplar(span)


def tracing_configured() -> bool:
    """Whether this process has a tracer provider (``bfm_observe.configure`` ran): without
    one, spans are no-ops and the producer skips them (and the traceparent) entirely."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def default_tracer(tracer: Tracer | None) -> Tracer:
    return tracer if tracer is not None else telemetry.tracer()


class HealthCounters:
    """A component's health counters since it started (``ComponentHealth`` without the
    version): ``handled`` messages, ``errors`` (``OWN_FAULT_REASONS``), and the handled
    messages per latency bucket (``LATENCY_BOUNDS_S``, then +Inf). Added to per batch:
    a batch whose messages finish at one moment costs one bucket lookup."""

    __slots__ = ("errors", "handled", "latency_counts")

    def __init__(self) -> None:
        self.handled = 0
        self.errors = 0
        self.latency_counts = [0] * (len(LATENCY_BOUNDS_S) + 1)

    def handled_many(self, n: int, latency_s: float) -> None:
        """``n`` messages finished, each ``latency_s`` after this process received it."""
        if n > 0:
            self.handled += n
            self.latency_counts[latency_bucket(latency_s)] += n

    def report(self, version: str) -> ComponentHealth:
        return ComponentHealth(version, self.handled, self.errors, tuple(self.latency_counts))


def summed_health(version: str, parts: Iterable[HealthCounters]) -> ComponentHealth:
    """One process's health: the counters of its parts (module, router) added up."""
    handled = errors = 0
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for part in parts:
        handled += part.handled
        errors += part.errors
        counts = [a + b for a, b in zip(counts, part.latency_counts, strict=True)]
    return ComponentHealth(version, handled, errors, tuple(counts))
