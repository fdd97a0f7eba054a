"""Telemetry of the real demo: every process exports spans over OTLP/HTTP to a collector
double (a real HTTP server on 127.0.0.1 decoding the protobuf; the OTel Collector cannot
be installed here), serves metrics, and writes JSON logs with trace ids.

- one alarm is one trace: producer -> router (backbone process) -> module (eap);
- one ``switchover`` is one trace spanning the leader's controller and the agents of both
  worker sites, and the agents' log lines about it carry its trace id;
- a message delayed by a site crash links to the failover decision's trace.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from demo_runs import run_demo
from support.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.scenario

Span = dict[str, Any]
EXPORT_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200"}  # ms: spans leave within the run


def _by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    return traces


def _service(span: Span) -> str:
    return str(span["resource"].get("service.name"))


def _site(span: Span) -> str:
    return str(span["resource"].get("bfm.site"))


def _run(tmp_path: Path, scenario: str, duration_s: int) -> tuple[list[Span], Path]:
    with OtlpReceiver() as rx:
        env = {**EXPORT_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url, "BFM_TELEMETRY": "on"}
        done, data = run_demo(
            tmp_path, scenario, duration_s=duration_s, rate=150, shards=4, env=env, timeout_s=240
        )
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        assert data["violations"] == []
        assert rx.errors == []
        return rx.spans(), tmp_path / "run"


def _log_lines(run_dir: Path, pattern: str) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(run_dir.glob(pattern)):
        for text in path.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                try:
                    lines.append(json.loads(text))
                except ValueError:
                    continue
    return lines


def test_switchover_is_one_trace_and_alarms_are_traced_end_to_end(tmp_path: Path) -> None:
    spans, run_dir = _run(tmp_path, "switchover", duration_s=20)
    traces = _by_trace(spans)

    # One alarm: producer -> router -> module, in three processes, one trace.
    alarm_traces = [
        t
        for t in traces.values()
        if any(s["name"] == "bfm.produce" and s["attributes"].get("bfm.kind") == "alarm" for s in t)
    ]
    assert alarm_traces, "no alarm trace was exported"
    complete = []
    for trace in alarm_traces:
        names = {(s["name"], _service(s)) for s in trace}
        if {("bfm.produce", "producer"), ("bfm.route", "backbone"), ("bfm.apply", "eap")} <= names:
            complete.append(trace)
    assert complete, f"no alarm trace spans producer, router and module; e.g. {alarm_traces[0]}"
    trace = complete[0]
    produce = next(s for s in trace if s["name"] == "bfm.produce")
    for span in trace:
        if span["name"] in ("bfm.route", "bfm.apply"):
            assert span["parent_span_id"] == produce["span_id"]
    for span in spans:  # resource attributes of section 5 on every process's spans
        assert span["resource"]["service.namespace"] == "hemisphere"
        assert span["resource"]["bfm.site"] == span["resource"]["cloud.availability_zone"]
        assert span["resource"]["service.instance.id"]

    # One switchover (drain at a, transfer to b): one trace over the controller and the
    # agents of both worker sites.
    switch = []
    for trace_spans in traces.values():
        decisions = [s for s in trace_spans if s["name"] == "bfm.decision"]
        applied = {_site(s) for s in trace_spans if s["name"] == "bfm.apply_decision"}
        kinds = {k for s in decisions for k in _kinds(s)}
        if decisions and {"a", "b"} <= applied and "drain" in kinds:
            switch.append(trace_spans)
    assert switch, "no decision trace spans the controller and both worker sites' agents"
    trace_id = switch[0][0]["trace_id"]
    children = {s["name"] for s in switch[0]}
    assert {"bfm.detect", "bfm.decide", "bfm.fence"} & children
    # ... and the agents' log lines about applying it carry its trace id.
    logged = [
        line
        for line in _log_lines(run_dir, "site-*.log")
        if line.get("trace_id") == trace_id and line.get("site") in ("a", "b")
    ]
    assert {line["site"] for line in logged} == {"a", "b"}, logged

    # Metrics: every process announced its scrape target.
    targets = sorted(p.name for p in (run_dir / "targets").glob("*.json"))
    assert "a-bfm-site.json" in targets and "w-bfm-site.json" in targets
    assert "a-eap.json" in targets and "b-backbone.json" in targets
    assert (run_dir / "prometheus.yml").exists()


def test_a_message_delayed_by_a_site_crash_links_to_the_failover(tmp_path: Path) -> None:
    spans, _ = _run(tmp_path, "site-crash", duration_s=14)
    traces = _by_trace(spans)
    failovers = {
        s["trace_id"] for s in spans if s["name"] == "bfm.decision" and "failover" in _kinds(s)
    }
    assert failovers, "no failover decision was traced"
    delayed = []
    for trace_spans in traces.values():
        produce = [s for s in trace_spans if s["name"] == "bfm.produce"]
        if not produce or not produce[0].get("events"):
            continue  # not refused or retried: not delayed
        for span in trace_spans:
            if span["name"] == "bfm.apply" and any(link[0] in failovers for link in span["links"]):
                delayed.append(span)
    assert delayed, "no delayed message's trace links to the failover decision"
    assert _site(delayed[0]) == "b"


def _kinds(span: Span) -> set[str]:
    value = span["attributes"].get("bfm.kinds", "")
    items = value if isinstance(value, list) else re.split(r"[,\s]+", str(value))
    return {str(k) for k in items if k}
