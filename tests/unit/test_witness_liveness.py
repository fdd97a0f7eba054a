"""``bfm_site_up`` of the witness: it has no lease, so the leader exports what its direct
heartbeats hear of it (SiteProcess._export_witness_liveness). A real site process object on
the memory store and a fake clock; heartbeat answers are reported as the channel would."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.topology import default_topology
from failover.runtime.heartbeats import Peer
from failover.runtime.site_process import SiteProcess, SiteSettings

TOPOLOGY = default_topology(shards_per_component=4)


def witness_up() -> float | None:
    return REGISTRY.get_sample_value("bfm_site_up", {"site": "w", "component": "controller"})


def leader_at_a(peers: dict[str, Peer], clock: FakeClock) -> SiteProcess:
    process = SiteProcess(
        SiteSettings("a", topology=TOPOLOGY, peers=peers), store=MemoryStore(), clock=clock
    )
    # a worker's replica takes the free leader lease after one lease duration
    clock.advance(process.settings.timing.lease_duration_s + 0.1)
    process._controller_tick()
    assert process.controller.leading(clock.monotonic())
    return process


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_the_leader_exports_whether_it_hears_the_witness(clock: FakeClock) -> None:
    process = leader_at_a({"w": Peer("w", "127.0.0.1", 9)}, clock)
    try:
        assert witness_up() == 0.0  # a lease duration and never heard: down
        process._peer_report("w", True, clock.monotonic())
        process._controller_tick()
        assert witness_up() == 1.0
        clock.advance(process.settings.timing.renew_deadline_s + 0.1)  # silent since
        process._controller_tick()
        assert witness_up() == 0.0
        process._peer_report("w", True, clock.monotonic())
        process._controller_tick()
        assert witness_up() == 1.0
    finally:
        process.controller.metrics.stop_leading()
        process.heartbeats.close()
    assert witness_up() is None  # a replica that stops leading takes its view away


def test_without_the_witness_as_a_peer_nothing_is_claimed_about_it(clock: FakeClock) -> None:
    process = leader_at_a({}, clock)
    try:
        process._controller_tick()
        assert witness_up() is None
    finally:
        process.controller.metrics.stop_leading()
        process.heartbeats.close()


def test_a_leader_at_the_witness_reports_it_up(clock: FakeClock) -> None:
    process = SiteProcess(
        SiteSettings("w", topology=TOPOLOGY, peers={"a": Peer("a", "127.0.0.1", 9)}),
        store=MemoryStore(),
        clock=clock,
    )
    try:
        process._controller_tick()  # the witness's replica leads at once
        assert process.controller.leading(clock.monotonic())
        assert witness_up() == 1.0  # the leader is the witness: it hears itself
    finally:
        process.controller.metrics.stop_leading()
        process.heartbeats.close()
