"""Starting many traces cheaply: a producer sends thousands of messages a second, each
the root of a trace, and most are not sampled. An SDK span costs ~10 us even when it
records nothing; deciding first and making up the unsampled trace's ``traceparent`` costs
a few.

    if sample_root(attributes):
        span = tracer.start_span(name, attributes={**attributes, FORCE_SAMPLE: True})
        traceparent = traceparent_of(span)
    else:
        span, traceparent = None, unsampled_traceparent()

The decision is the live sampler's for a fresh trace (the same rule and ratio as
``start_span``); a sampled root is then started with ``FORCE_SAMPLE`` so the SDK keeps
that decision instead of drawing again. The unsampled ``traceparent`` carries flags
``00``: every process downstream (parent-based) leaves the trace unsampled too.
"""

from __future__ import annotations

import random

from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.util.types import Attributes

from bfm_observe.tracing import live_sampler

FORCE_SAMPLE = "bfm.always_sample"
"""The attribute BFM's root sampler always samples (controller decisions carry it too)."""

_random = random.Random()  # ids need no cryptographic strength (the SDK uses random too)


def sample_root(attributes: Attributes) -> bool:
    """Whether a new trace whose root span has ``attributes`` would be sampled now."""
    trace_id = _random.getrandbits(128) or 1
    result = live_sampler().should_sample(None, trace_id, "root", attributes=attributes)
    return result.decision in (Decision.RECORD_AND_SAMPLE,)


def unsampled_traceparent() -> str:
    """The ``traceparent`` of a new, unsampled trace (valid, non-zero ids; flags 00)."""
    trace_id = _random.getrandbits(128) or 1
    span_id = _random.getrandbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-00"
