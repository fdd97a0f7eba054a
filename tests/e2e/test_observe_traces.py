"""Spans reach a real HTTP server standing in for the OpenTelemetry Collector (OTLP/HTTP
protobuf), with BFM's resource attributes, parents and links; a reconfigured process
exports to its new receiver; a dead collector never blocks span creation."""

from __future__ import annotations

import io
import time

import pytest
from opentelemetry import trace
from support.loki_receiver import closed_port_url
from support.otlp_receiver import OtlpReceiver

import bfm_observe

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_telemetry")]
WAIT_S = 10.0


def named(name: str, spans: list[dict[str, object]]) -> dict[str, object] | None:
    return next((s for s in spans if s["name"] == name), None)


def test_spans_are_exported_with_resource_parents_and_links() -> None:
    with OtlpReceiver() as rx:
        tel = bfm_observe.configure(
            "router", "a", otlp_endpoint=rx.url, sample_ratio=1.0, log_stream=io.StringIO()
        )
        tracer = trace.get_tracer("bfm")
        decision = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with tracer.start_as_current_span("route", attributes={"bfm.kind": "alarm"}) as parent:
            link = bfm_observe.link_to(decision, epoch=7)
            assert link is not None
            with tracer.start_as_current_span("forward", links=[link]):
                pass
        assert tel.force_flush()
        spans = rx.wait_for(lambda s: named("route", s) and named("forward", s), WAIT_S)
    route, forward = named("route", spans), named("forward", spans)
    assert route is not None and forward is not None
    ctx = parent.get_span_context()
    assert route["trace_id"] == forward["trace_id"] == f"{ctx.trace_id:032x}"
    assert forward["parent_span_id"] == route["span_id"] == f"{ctx.span_id:016x}"
    assert route["attributes"] == {"bfm.kind": "alarm"}
    assert forward["links"] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", {"epoch": 7})
    ]
    resource = route["resource"]
    assert isinstance(resource, dict)
    assert {k: resource[k] for k in ("service.namespace", "service.name", "bfm.site")} == {
        "service.namespace": "hemisphere",
        "service.name": "router",
        "bfm.site": "a",
    }
    assert resource["cloud.availability_zone"] == "a"
    assert resource["service.instance.id"] == tel.instance_id
    assert route["scope"] == "bfm"


def test_only_sampled_spans_are_exported() -> None:
    with OtlpReceiver() as rx:
        bfm_observe.configure(
            "router", "a", otlp_endpoint=rx.url, sample_ratio=0.0, log_stream=io.StringIO()
        )
        tracer = trace.get_tracer("bfm")
        for _ in range(20):
            with tracer.start_as_current_span("plain"):
                pass
        with tracer.start_as_current_span("alarm", attributes={"bfm.kind": "alarm"}):
            pass
        bfm_observe.shutdown()  # flushes
        spans = rx.wait_for(lambda s: named("alarm", s), WAIT_S)
    assert [s["name"] for s in spans] == ["alarm"]


def test_reconfigured_process_exports_to_its_new_receiver() -> None:
    tracer = trace.get_tracer("bfm")  # obtained before any configure: follows along
    with OtlpReceiver() as first, OtlpReceiver() as second:
        bfm_observe.configure(
            "router", "a", otlp_endpoint=first.url, sample_ratio=1.0, log_stream=io.StringIO()
        )
        with tracer.start_as_current_span("one"):
            pass
        bfm_observe.shutdown()
        first.wait_for(lambda s: named("one", s), WAIT_S)
        bfm_observe.configure(
            "module", "b", otlp_endpoint=second.url, sample_ratio=1.0, log_stream=io.StringIO()
        )
        with tracer.start_as_current_span("two"):
            pass
        bfm_observe.shutdown()
        spans = second.wait_for(lambda s: named("two", s), WAIT_S)
        assert [s["name"] for s in first.spans()] == ["one"]
    two = named("two", spans)
    assert two is not None
    assert two["resource"]["service.name"] == "module"  # type: ignore[index]
    assert two["resource"]["bfm.site"] == "b"  # type: ignore[index]


def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        bfm_observe.configure("router", "a", log_stream=io.StringIO())
        with trace.get_tracer("bfm").start_as_current_span("env"):
            pass
        bfm_observe.shutdown()
        rx.wait_for(lambda s: named("env", s), WAIT_S)


def test_a_dead_collector_never_blocks_span_creation() -> None:
    tel = bfm_observe.configure(
        "router", "a", otlp_endpoint=closed_port_url(), sample_ratio=1.0, log_stream=io.StringIO()
    )
    tracer = tel.tracer
    started = time.monotonic()
    for _ in range(5000):  # more than the batch processor's queue holds
        with tracer.start_as_current_span("s"):
            pass
    assert time.monotonic() - started < 5.0  # generous: ~0.2 s here
    started = time.monotonic()
    bfm_observe.shutdown()
    assert time.monotonic() - started < 6.0  # shutdown waits about 3 s at most
