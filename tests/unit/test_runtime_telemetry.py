"""Every controller decision is one trace, and the runtime's metrics move with it.

Two site agents and the witness's controller replica on one memory store and a fake clock
(as ``small_system.py``), each given a tracer of an OpenTelemetry SDK provider that keeps
its spans in memory (the global provider can be set once per process only, so nothing
here touches it). Metrics are read from prometheus-client's default registry, where
``failover.telemetry`` puts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, Tracer
from prometheus_client import REGISTRY

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import default_topology
from failover.ports import Conflict, CoordinationStore, OutcomeUnknown, StoreUnavailable
from failover.runtime import admin
from failover.runtime.controller import ControllerRuntime
from failover.runtime.decision_trace import DecisionTracer
from failover.runtime.documents import ownership_key
from failover.runtime.grants import Grants
from failover.runtime.instrumented_store import InstrumentedStore
from failover.runtime.site_agent import SiteAgentRuntime

TOPOLOGY = default_topology(shards_per_component=4)
TIMING = LeaseTiming()
STEP_S = 0.1


class Switchable:
    """The controller's way to the store, which a test can cut (the agents keep theirs)."""

    def __init__(self, inner: CoordinationStore) -> None:
        self.inner, self.down = inner, False

    def __getattr__(self, name: str) -> Any:
        if self.down and name != "url":
            raise StoreUnavailable("cut off by the test")
        return getattr(self.inner, name)


class System:
    """Agents of a and b, the controller of w, one store; ``running``: agents driven."""

    def __init__(self, tracer: Tracer) -> None:
        self.store = MemoryStore()
        self.clock = FakeClock()
        self.running = {"a", "b"}
        self.controller_store = Switchable(self.store)
        self.agents = {
            site: SiteAgentRuntime(
                site,
                store=self.store,
                clock=self.clock,
                topology=TOPOLOGY,
                timing=TIMING,
                detector=DetectorTiming(),
                probe=lambda component: True,
                tracer=tracer,
            )
            for site in TOPOLOGY.workers
        }
        self.controller = ControllerRuntime(
            "w",
            store=self.controller_store,  # type: ignore[arg-type]
            clock=self.clock,
            topology=TOPOLOGY,
            timing=TIMING,
            detector=DetectorTiming(),
            policy=PlacementPolicy(),
            tracer=tracer,
        )

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP_S)):
            for site in sorted(self.running):
                self.agents[site].renew()
                self.agents[site].poll()
            self.controller.tick()
            self.clock.advance(STEP_S)

    def run_until(self, done: Callable[[], bool], *, limit_s: float, what: str) -> None:
        for _ in range(round(limit_s / STEP_S)):
            if done():
                return
            self.run(STEP_S)
        raise AssertionError(f"not reached within {limit_s} s: {what}")

    def ownership(self, component: str) -> Ownership:
        got = self.store.get(ownership_key(component))
        assert got is not None
        return Ownership.from_doc(got.value)

    def owned(self, component: str) -> dict[str, int]:
        if self.store.get(ownership_key(component)) is None:
            return {}
        return self.ownership(component).counts(TOPOLOGY.workers)

    def even(self) -> bool:
        half = TOPOLOGY.shards_per_component // 2
        return all(self.owned(c) == {"a": half, "b": half} for c in TOPOLOGY.components)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def system(exporter: InMemorySpanExporter) -> System:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    started = System(provider.get_tracer("bfm"))
    started.run_until(started.even, limit_s=5.0, what="the initial placement")
    started.run(1.0)  # the agents read it
    exporter.clear()
    return started


def hexes(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    ctx = parent.get_span_context()
    assert ctx is not None
    return {s.name: s for s in spans if s.parent is not None and s.parent.span_id == ctx.span_id}


def attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


# -- traces -----------------------------------------------------------------------------------


def test_a_site_failure_is_one_trace_and_the_documents_carry_it(
    system: System, exporter: InMemorySpanExporter
) -> None:
    stopped_wall_s = system.clock.wall()
    system.running.discard("a")
    system.run_until(
        lambda: all(system.owned(c)["b"] == 4 for c in TOPOLOGY.components),
        limit_s=TIMING.lease_duration_s + 3.0,
        what="b owns everything",
    )
    system.run(0.5)  # b reads it
    spans = exporter.get_finished_spans()
    decisions = named(spans, "bfm.decision")
    assert len(decisions) == 1, [attr(d, "bfm.decisions") for d in decisions]
    decision = decisions[0]
    assert decision.parent is None  # a new root: nothing earlier is finished here
    assert attr(decision, "bfm.always_sample") is True
    assert attr(decision, "bfm.leader_site") == "w"
    assert attr(decision, "bfm.term") == system.controller.term
    assert set(attr(decision, "bfm.kinds")) == {"failover"}
    trace_id, span_id = hexes(decision)
    phases = children(spans, decision)
    assert {"bfm.detect", "bfm.decide", "bfm.fence", "bfm.record"} <= set(phases)
    assert all(hexes(s)[0] == trace_id for s in phases.values())
    detect = phases["bfm.detect"]
    assert detect.start_time is not None and decision.start_time is not None
    # The detection starts at the last renewal of a the controller saw, and ends when
    # the decision is made, one lease duration (and a tick or so) later.
    assert abs(detect.start_time / 1e9 - stopped_wall_s) <= 0.5
    assert detect.end_time is not None
    assert (detect.end_time - detect.start_time) / 1e9 >= TIMING.lease_duration_s - 1e-3
    assert decision.start_time == detect.start_time
    assert any("site a down" in e.name for e in detect.events)
    fence = phases["bfm.fence"]
    for c in TOPOLOGY.components:
        doc = system.ownership(c)
        assert (doc.trace_id, doc.span_id) == (trace_id, span_id)
        assert attr(fence, f"bfm.max_epoch.{c}") == doc.max_epoch
    # Every component's previous decision (the initial placement) is linked.
    assert {attr_of(link, "bfm.link") for link in decision.links} == {"previous-decision"}
    # b takes the shards over inside the same trace.
    applied = [s for s in named(spans, "bfm.apply_decision") if hexes(s)[0] == trace_id]
    assert {attr(s, "bfm.site") for s in applied} == {"b"}
    assert {attr(s, "bfm.component") for s in applied} == set(TOPOLOGY.components)
    assert all(s.parent is not None and s.parent.span_id == int(span_id, 16) for s in applied)
    assert all(len(attr(s, "bfm.gained")) == 2 for s in applied)


def attr_of(link: Any, key: str) -> Any:
    return (link.attributes or {}).get(key)


def test_a_switchover_is_one_trace_from_the_drain_to_both_sites_applying_it(
    system: System, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="bfm.agent")
    admin.switchover(system.store, "eap", "b", topology=TOPOLOGY, clock=system.clock)
    system.run_until(lambda: system.owned("eap")["b"] == 4, limit_s=5.0, what="eap at b")
    system.run(0.5)
    spans = exporter.get_finished_spans()
    decisions = [d for d in named(spans, "bfm.decision") if "eap" in attr(d, "bfm.components")]
    kinds = [tuple(attr(d, "bfm.kinds")) for d in decisions]
    assert kinds == [("drain",), ("transfer",)]
    drain, transfer = decisions
    trace_id, drain_span = hexes(drain)
    assert drain.parent is None
    assert transfer.parent is not None and transfer.parent.span_id == int(drain_span, 16)
    assert hexes(transfer)[0] == trace_id and attr(transfer, "bfm.continues_trace") is True
    in_trace = [s for s in spans if hexes(s)[0] == trace_id]
    applied = {
        (attr(s, "bfm.site"), tuple(attr(s, "bfm.draining")), tuple(attr(s, "bfm.lost")))
        for s in named(in_trace, "bfm.apply_decision")
    }
    assert {site for site, _, _ in applied} == {"a", "b"}
    assert any(site == "a" and draining for site, draining, _ in applied)  # a drains ...
    assert any(site == "a" and lost for site, _, lost in applied)  # ... and gives them up
    assert [attr(s, "bfm.site") for s in named(in_trace, "bfm.release")] == ["a"]
    doc = system.ownership("eap")
    assert doc.trace_id == trace_id and doc.span_id == hexes(transfer)[1]
    # The agents' log lines about it carry the same trace id.
    lines = [r for r in caplog.records if getattr(r, "component", "") == "eap"]
    events = {(getattr(r, "event", ""), getattr(r, "site", "")) for r in lines}
    assert {("apply_decision", "a"), ("apply_decision", "b"), ("released", "a")} <= events
    assert {getattr(r, "trace_id", "") for r in lines} == {trace_id}


def test_rounds_that_change_nothing_make_no_span(
    system: System, exporter: InMemorySpanExporter
) -> None:
    system.run(3.0)
    assert exporter.get_finished_spans() == ()


def test_without_telemetry_documents_still_carry_ids_and_a_switchover_keeps_one() -> None:
    quiet = System(NoOpTracer())
    quiet.run_until(quiet.even, limit_s=5.0, what="the initial placement")
    first = quiet.ownership("eap")
    assert len(first.trace_id) == 32 and len(first.span_id) == 16
    admin.switchover(quiet.store, "eap", "b", topology=TOPOLOGY, clock=quiet.clock)
    quiet.run_until(
        lambda: quiet.ownership("eap").max_epoch > first.max_epoch, limit_s=5.0, what="drain"
    )
    drained = quiet.ownership("eap")
    assert drained.trace_id != first.trace_id
    quiet.run_until(lambda: quiet.owned("eap")["b"] == 4, limit_s=5.0, what="eap at b")
    assert quiet.ownership("eap").trace_id == drained.trace_id


def test_the_grants_name_the_decisions_they_come_from(system: System) -> None:
    grants = system.agents["a"].grants()
    assert set(grants.decisions) == set(TOPOLOGY.components)
    for c, traceparent in grants.decisions.items():
        doc = system.ownership(c)
        assert traceparent == f"00-{doc.trace_id}-{doc.span_id}-01"
    assert Grants.from_json(grants.to_json()) == grants
    old = '{"site": "a", "session": 1, "valid_until_mono_s": 5.0, "shards": {"eap": {"0": 3}}}'
    assert Grants.from_json(old).decisions == {}


# -- metrics ----------------------------------------------------------------------------------


def test_the_leader_exports_the_state_and_a_failover_moves_it(system: System) -> None:
    assert sample("bfm_controller_is_leader", site="w", component="controller") == 1.0
    assert sample("bfm_leader_present", site="w", component="controller") == 1.0
    assert sample("bfm_site_up", site="a", component="controller") == 1.0
    assert sample("bfm_shards_owned", site="a", component="eap") == 2.0
    epoch = system.ownership("eap").max_epoch
    assert sample("bfm_epoch_max", site="w", component="eap") == epoch
    assert sample("bfm_component_up", site="a", component="eap") == 1.0
    assert sample("bfm_site_fenced", site="a", component="agent") == 0.0
    assert sample("bfm_failsafe_active", site="a", component="agent") == 0.0
    assert (
        sample("bfm_lease_renewal_duration_seconds_count", site="a", component="agent") or 0
    ) > 0

    def count(name: str, **labels: str) -> float:
        return sample(name, **labels) or 0.0

    failovers = count("bfm_failovers_total", site="w", component="eap", kind="failover")
    detections = count("bfm_detection_seconds_count", site="a", component="controller")
    recoveries = count("bfm_recovery_seconds_count", site="a", component="eap")
    phases = count(
        "bfm_decision_phase_duration_seconds_count", site="w", component="controller", phase="fence"
    )
    system.running.discard("a")
    system.run_until(
        lambda: system.owned("eap")["b"] == 4,
        limit_s=TIMING.lease_duration_s + 3.0,
        what="failover",
    )
    assert sample("bfm_site_up", site="a", component="controller") == 0.0
    assert sample("bfm_shards_owned", site="a", component="eap") == 0.0
    assert sample("bfm_shards_owned", site="b", component="eap") == 4.0
    assert sample("bfm_failover_in_progress", site="a", component="eap") == 0.0
    assert count("bfm_failovers_total", site="w", component="eap", kind="failover") == failovers + 1
    assert count("bfm_detection_seconds_count", site="a", component="controller") == detections + 1
    detected_s = sample("bfm_detection_seconds_sum", site="a", component="controller") or 0.0
    assert detected_s >= TIMING.lease_duration_s  # at least the last one
    assert count("bfm_recovery_seconds_count", site="a", component="eap") == recoveries + 1
    assert (
        count(
            "bfm_decision_phase_duration_seconds_count",
            site="w",
            component="controller",
            phase="fence",
        )
        > phases
    )
    # a comes back: its shards are due back after the hold-off, and go back then.
    system.running.add("a")
    system.run(1.0)
    assert sample("bfm_site_up", site="a", component="controller") == 1.0
    assert sample("bfm_handback_pending_shards", site="a", component="eap") == 2.0
    assert sample("bfm_handback_pending_shards", site="b", component="eap") == 0.0
    system.run_until(system.even, limit_s=DetectorTiming().handback_holdoff_s + 10.0, what="even")
    system.run(0.5)
    assert sample("bfm_handback_pending_shards", site="a", component="eap") == 0.0


def test_a_lease_that_expires_between_observing_and_deciding_still_times_the_recovery(
    system: System,
) -> None:
    """The round reads the leases (a alive), then the ownership; a's lease expires in
    between. The failover must follow the observation that saw a die, or nothing knows
    when a's outage began and its recovery time is never exported (a CI run's
    dashboards test once lacked it)."""
    recoveries = sample("bfm_recovery_seconds_count", site="a", component="eap") or 0.0
    system.running.discard("a")
    system.run(TIMING.lease_duration_s - 0.3)  # a is not yet judged dead
    assert sample("bfm_site_up", site="a", component="controller") == 1.0
    inner = system.controller_store.inner
    listed = inner.list

    def slow_list(prefix: str) -> Any:  # decide()'s read takes past a's expiry
        system.clock.advance(0.5)
        return listed(prefix)

    system.controller_store.inner = Wrapped(inner, list=slow_list)
    system.controller.tick()
    system.controller_store.inner = inner
    system.run_until(lambda: system.owned("eap")["b"] == 4, limit_s=3.0, what="a's eap shards at b")
    assert (sample("bfm_recovery_seconds_count", site="a", component="eap") or 0.0) == (
        recoveries + 1
    )


class Wrapped:
    """A store whose named methods are replaced (the rest go to ``inner``)."""

    def __init__(self, inner: CoordinationStore, **methods: Callable[..., Any]) -> None:
        self.inner, self.methods = inner, methods

    def __getattr__(self, name: str) -> Any:
        return self.methods.get(name) or getattr(self.inner, name)


def test_a_failover_that_cannot_happen_stays_in_progress(system: System) -> None:
    system.agents["b"].probe = lambda component: component != "eap"
    system.run(1.0)  # b's eap is down: its shards fail over to a at once
    assert sample("bfm_component_up", site="b", component="eap") == 0.0
    assert sample("bfm_shards_owned", site="a", component="eap") == 4.0
    assert sample("bfm_failover_in_progress", site="b", component="eap") == 0.0
    system.running.discard("a")  # then a is lost: no survivor runs eap
    system.run(TIMING.lease_duration_s + 2.0)
    assert sample("bfm_failover_in_progress", site="a", component="eap") == 1.0
    assert sample("bfm_failover_in_progress", site="a", component="eep") == 0.0  # at b now
    assert sample("bfm_shards_owned", site="b", component="eep") == 4.0


def test_a_replica_that_stops_leading_removes_the_view_and_keeps_the_history(
    system: System,
) -> None:
    system.run(0.5)
    assert sample("bfm_shards_owned", site="a", component="eap") == 2.0
    decided = sample("bfm_failovers_total", site="w", component="eap", kind="initial")
    assert decided
    system.controller_store.down = True
    system.run(TIMING.renew_deadline_s + 0.5)
    assert sample("bfm_controller_is_leader", site="w", component="controller") == 0.0
    for name, labels in [
        ("bfm_shards_owned", {"site": "a", "component": "eap"}),
        ("bfm_epoch_max", {"site": "w", "component": "eap"}),
        ("bfm_site_up", {"site": "a", "component": "controller"}),
        ("bfm_handback_pending_shards", {"site": "a", "component": "eap"}),
    ]:
        assert REGISTRY.get_sample_value(name, labels) is None, name
    # What it decided stays: a decision must not vanish before Prometheus scrapes it.
    assert sample("bfm_failovers_total", site="w", component="eap", kind="initial") == decided
    system.controller_store.down = False
    system.run(TIMING.lease_duration_s + 1.0)  # it leads again and exports again
    assert sample("bfm_controller_is_leader", site="w", component="controller") == 1.0
    assert sample("bfm_shards_owned", site="a", component="eap") == 2.0


def test_the_instrumented_store_counts_every_outcome() -> None:
    inner = MemoryStore()
    store = InstrumentedStore(inner, site="t", component="store-test")
    labels = {"site": "t", "component": "store-test"}

    def count(op: str, outcome: str) -> float:
        name = "bfm_store_request_duration_seconds_count"
        return REGISTRY.get_sample_value(name, {**labels, "op": op, "outcome": outcome}) or 0.0

    before = {
        (op, outcome): count(op, outcome)
        for op in ("get", "create", "compare_and_set", "list")
        for outcome in ("ok", "conflict", "unavailable", "unknown")
    }
    assert store.url == inner.url
    revision = store.create("k", {"v": 1})
    assert store.get("k") is not None and store.get("missing") is None
    with pytest.raises(Conflict):
        store.create("k", {"v": 2})
    with pytest.raises(Conflict):
        store.compare_and_set("k", {"v": 2}, expected_revision=revision + "x")
    assert REGISTRY.get_sample_value("bfm_store_reachable", labels) == 1.0
    inner.set_fault("unavailable")
    with pytest.raises(StoreUnavailable):
        store.list("")
    assert REGISTRY.get_sample_value("bfm_store_reachable", labels) == 0.0
    inner.set_fault("outcome_unknown_lost")
    with pytest.raises(OutcomeUnknown):
        store.create("j", {"v": 1})
    inner.set_fault(None)
    store.compare_and_set("k", {"v": 3}, expected_revision=revision)
    assert REGISTRY.get_sample_value("bfm_store_reachable", labels) == 1.0
    grown = {key: count(*key) - n for key, n in before.items() if count(*key) != n}
    assert grown == {
        ("create", "ok"): 1,
        ("get", "ok"): 2,
        ("create", "conflict"): 1,
        ("compare_and_set", "conflict"): 1,
        ("list", "unavailable"): 1,
        ("create", "unknown"): 1,
        ("compare_and_set", "ok"): 1,
    }


def test_a_site_going_down_explains_each_components_decision_once() -> None:
    """A round that decides about some components (a hand-back still running) must not
    use up the observation of a site going down for the components decided later; each
    component's decision tells it once, and it ages out after ``keep_s``."""
    clock = FakeClock()
    tracer = DecisionTracer(
        "w", clock=clock, tracer=NoOpTracer(), keep_s=10.0, components=TOPOLOGY.components
    )
    tracer.observe("a", "", "site a down", at_s=clock.monotonic())
    assert [o.what for o in tracer.take_observations(["gsm"])] == ["site a down"]
    clock.advance(0.5)
    assert [o.what for o in tracer.take_observations(["eap", "eep"])] == ["site a down"]
    assert tracer.take_observations(["eap"]) == []
    clock.advance(10.0)
    assert tracer.take_observations(["aam"]) == []
