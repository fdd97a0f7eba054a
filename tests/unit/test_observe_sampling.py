"""Sampling: alarms and controller decisions always, the rest by ratio, parent-based;
OTEL_TRACES_SAMPLER mapping; exemplars only for sampled spans."""

from __future__ import annotations

import io

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, ParentBased

import bfm_observe
from bfm_observe.sampling import BfmRootSampler
from bfm_observe.tracing import DEFAULT_SAMPLE_RATIO, resolve_sampler

pytestmark = pytest.mark.usefixtures("clean_telemetry")

LOW = 0x0123456789ABCDEF_0000000000000001  # low 64 bits tiny: sampled at any ratio > 0
HIGH = 0x0123456789ABCDEF_FFFFFFFFFFFFFFF0  # low 64 bits huge: sampled only at ratio 1
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def decide(sampler: BfmRootSampler, trace_id: int, **attrs: object) -> Decision:
    return sampler.should_sample(None, trace_id, "s", attributes=attrs or None).decision  # type: ignore[arg-type]


def test_root_sampler_by_trace_id() -> None:
    half = BfmRootSampler(0.5)
    assert decide(half, LOW) is Decision.RECORD_AND_SAMPLE
    assert decide(half, HIGH) is Decision.DROP
    assert decide(BfmRootSampler(0.0), LOW) is Decision.DROP
    assert decide(BfmRootSampler(1.0), HIGH) is Decision.RECORD_AND_SAMPLE


def test_alarms_and_decisions_are_always_sampled() -> None:
    never = BfmRootSampler(0.0)
    assert decide(never, HIGH, **{"bfm.kind": "alarm"}) is Decision.RECORD_AND_SAMPLE
    assert decide(never, HIGH, **{"bfm.always_sample": True}) is Decision.RECORD_AND_SAMPLE
    assert decide(never, LOW, **{"bfm.kind": "video"}) is Decision.DROP
    assert decide(never, LOW, **{"bfm.always_sample": "true"}) is Decision.DROP


def start(name: str, parent: str = "", **attrs: str | bool) -> trace.Span:
    tracer = trace.get_tracer("bfm")
    return tracer.start_span(name, context=bfm_observe.context_of(parent), attributes=attrs)


def test_configured_sampler_is_parent_based_with_the_alarm_rule() -> None:
    bfm_observe.configure("router", "a", log_stream=io.StringIO(), sample_ratio=0.0)
    cases = [
        (start("plain"), False),
        (start("alarm", **{"bfm.kind": "alarm"}), True),
        (start("decision", **{"bfm.always_sample": True}), True),
        (start("child of sampled", SAMPLED), True),
        (start("alarm under unsampled parent", UNSAMPLED, **{"bfm.kind": "alarm"}), False),
    ]
    for span, sampled in cases:
        span.end()
        assert span.get_span_context().trace_flags.sampled is sampled, span


def test_ratio_holds_over_many_root_spans() -> None:
    bfm_observe.configure("router", "a", log_stream=io.StringIO(), sample_ratio=0.25)
    spans = [start("s") for _ in range(4000)]
    share = sum(s.get_span_context().trace_flags.sampled for s in spans) / len(spans)
    assert 0.2 < share < 0.3  # 0.25 +- 7 standard deviations


@pytest.mark.parametrize(
    ("env", "alarm_sampled", "plain_sampled", "parent_based"),
    [
        ({}, True, None, True),
        ({"OTEL_TRACES_SAMPLER": "always_on"}, True, True, False),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, False, False, False),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, True, True, True),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, False, False, True),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
            True,
            False,
            False,
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
            True,
            False,
            True,
        ),
        ({"OTEL_TRACES_SAMPLER": "bogus", "OTEL_TRACES_SAMPLER_ARG": "x"}, True, None, True),
    ],
)
def test_otel_traces_sampler_mapping(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    alarm_sampled: bool,
    plain_sampled: bool | None,
    parent_based: bool,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sampler = resolve_sampler(None)
    assert isinstance(sampler, ParentBased) is parent_based
    alarm = sampler.should_sample(None, HIGH, "a", attributes={"bfm.kind": "alarm"})
    assert (alarm.decision is Decision.RECORD_AND_SAMPLE) is alarm_sampled
    if plain_sampled is None:  # the default ratio: LOW is in, HIGH is out
        assert DEFAULT_SAMPLE_RATIO < 1
        plain_sampled = sampler.should_sample(None, LOW, "p").decision.is_sampled()
        assert plain_sampled
        assert not sampler.should_sample(None, HIGH, "p").decision.is_sampled()
    else:
        got = sampler.should_sample(None, LOW, "p").decision.is_sampled()
        assert got is plain_sampled


def test_explicit_ratio_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    sampler = resolve_sampler(1.0)
    assert sampler.should_sample(None, HIGH, "p").decision.is_sampled()


def test_exemplar_only_inside_a_sampled_span() -> None:
    assert bfm_observe.exemplar() is None
    bfm_observe.configure("router", "a", log_stream=io.StringIO(), sample_ratio=0.0)
    tracer = trace.get_tracer("bfm")
    with tracer.start_as_current_span("plain"):
        assert bfm_observe.exemplar() is None
    with tracer.start_as_current_span("alarm", attributes={"bfm.kind": "alarm"}) as span:
        ctx = span.get_span_context()
        assert bfm_observe.exemplar() == {
            "trace_id": f"{ctx.trace_id:032x}",
            "span_id": f"{ctx.span_id:016x}",
        }
