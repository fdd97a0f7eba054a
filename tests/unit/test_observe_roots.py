"""The cheap root decision (bfm_observe.roots): the live sampler's rule and ratio, an
unsampled traceparent downstream processes leave alone, and the producer using both."""

from __future__ import annotations

import io
import json
import time

import pytest

import bfm_observe
from bfm_observe.propagation import is_sampled, span_context_of
from bfm_observe.roots import FORCE_SAMPLE, sample_root, unsampled_traceparent
from failover.workload.producer import Producer

pytestmark = pytest.mark.usefixtures("clean_telemetry")


def _configure(ratio: float) -> None:
    bfm_observe.configure(component="t", site="a", sample_ratio=ratio, log_stream=io.StringIO())


def test_sample_root_follows_the_live_rule_and_ratio() -> None:
    _configure(0.0)
    assert all(sample_root({"bfm.kind": "alarm"}) for _ in range(50))
    assert all(sample_root({FORCE_SAMPLE: True}) for _ in range(50))
    assert not any(sample_root({"bfm.kind": "event"}) for _ in range(200))
    bfm_observe.shutdown()
    _configure(1.0)
    assert all(sample_root({"bfm.kind": "event"}) for _ in range(50))
    bfm_observe.shutdown()
    _configure(0.25)
    share = sum(sample_root({"bfm.kind": "event"}) for _ in range(4000)) / 4000
    assert 0.18 < share < 0.32  # by trace id, as the SDK's own sampler


def test_an_unsampled_traceparent_is_valid_and_not_sampled() -> None:
    seen = {unsampled_traceparent() for _ in range(100)}
    assert len(seen) == 100
    for tp in seen:
        assert tp.endswith("-00") and not is_sampled(tp)
        assert span_context_of(tp) is not None


def test_the_producer_makes_spans_only_for_sampled_roots() -> None:
    _configure(0.0)
    history = io.StringIO()
    producer = Producer(
        [("127.0.0.1", 1)], rate_per_s=100, shard_count=4, history=history, wall=time.time
    )
    messages = [producer._message(n) for n in range(60)]
    for msg in messages:
        env = json.loads(msg.line)["env"]
        if env["kind"] == "alarm":  # always sampled: a real span, its id in the envelope
            assert msg.span is not None and msg.span.is_recording()
            assert is_sampled(env["traceparent"])
            assert msg.span.attributes is not None and msg.span.attributes[FORCE_SAMPLE]
        else:  # no SDK span at all, an unsampled trace context all the same
            assert msg.span is None
            assert env["traceparent"].endswith("-00")
        if msg.span is not None:
            msg.span.end()
    sends = [json.loads(line) for line in history.getvalue().splitlines()]
    traced = [s for s in sends if "trace_id" in s]
    assert len(traced) == 10  # the alarms: a sixth of 60 in the uniform mix
