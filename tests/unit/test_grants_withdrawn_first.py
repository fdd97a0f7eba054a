"""Safety found by the partition runs: grants given up locally before the controller hears,
and no failsafe while the witness can reach the store.

Found by the partition runs (``bfm chaos --scenario flap-a``): a component that answered
its probes too slowly on a loaded host was reported down in a lease renewal, the
controller moved its shards at once, and the module, still running, committed under the
old epoch for another ~90 ms, until the agent's next poll rewrote the grants file. The
renewal that reports a component down (or acknowledges a drain) now publishes the
withdrawn grants before its record is written.
"""

from __future__ import annotations

from typing import Any

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.quorum import LeaseTiming
from failover.core.topology import default_topology
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import lease_key
from failover.runtime.grants import Grants
from failover.runtime.site_agent import SiteAgentRuntime
from failover.runtime.site_process import SiteProcess, SiteSettings

TOPOLOGY = default_topology(shards_per_component=4)


def test_a_component_reported_down_is_withdrawn_from_the_grants_before_the_store_hears() -> None:
    store, clock = MemoryStore(), FakeClock()
    down: set[str] = set()
    published: list[tuple[Grants, Any]] = []  # each grants publication, and the stored lease

    def publish(grants: Grants) -> None:
        lease = store.get(lease_key("a"))
        published.append((grants, None if lease is None else lease.value))

    agents = {
        site: SiteAgentRuntime(
            site,
            store=store,
            clock=clock,
            topology=TOPOLOGY,
            timing=LeaseTiming(),
            detector=DetectorTiming(),
            probe=(lambda c: c not in down) if site == "a" else (lambda c: True),
            exited=lambda c: False,  # unanswered, not gone: a slow or hung process
            publish_grants=publish if site == "a" else None,
        )
        for site in TOPOLOGY.workers
    }
    controller = ControllerRuntime(
        "w",
        store=store,
        clock=clock,
        topology=TOPOLOGY,
        timing=LeaseTiming(),
        detector=DetectorTiming(),
        policy=PlacementPolicy(),
    )

    def run(rounds: int) -> None:
        for _ in range(rounds):
            for agent in agents.values():
                agent.renew()
                agent.poll()
            controller.tick()
            clock.advance(0.1)

    run(40)
    assert any(c == "eep" for c, _ in agents["a"].grants().epochs), "a serves some eep shards"
    published.clear()

    down.add("eep")
    run(10)

    reported = [
        (grants, lease)
        for grants, lease in published
        if lease is not None and "eep" in lease.get("components_up", [])
    ]
    # The publication made while the store still said "eep up at a" already had no eep.
    assert reported, published
    last_before = reported[-1][0]
    assert not [key for key in last_before.epochs if key[0] == "eep"], last_before
    lease = store.get(lease_key("a"))
    assert lease is not None and "eep" not in lease.value["components_up"]


def test_a_site_agent_waits_for_the_witness_too_before_a_failsafe() -> None:
    """The runtime gives each agent every other site as a failsafe peer, the witness too
    (see test_quorum.test_no_failsafe_while_the_witness_can_reach_the_store)."""
    clock = FakeClock()
    agent = SiteAgentRuntime(
        "a",
        store=MemoryStore(),
        clock=clock,
        topology=TOPOLOGY,
        timing=LeaseTiming(),
        detector=DetectorTiming(),
        probe=lambda c: True,
    )
    assert set(agent.agent.peers) == {"b", "w"}
    agent.agent.store_failed()
    agent.heard_peer("b", store_ok=False, at_s=clock.monotonic())
    assert not agent.agent.failsafe(clock.monotonic())  # b alone proves nothing
    agent.heard_peer("w", store_ok=False, at_s=clock.monotonic())
    assert agent.agent.failsafe(clock.monotonic())


def test_a_site_says_store_down_only_when_neither_its_agent_nor_its_controller_reaches_it() -> None:
    """What a worker's heartbeats tell the others (their failsafe hangs on it)."""
    site = SiteProcess(SiteSettings("b", topology=TOPOLOGY), store=MemoryStore(), clock=FakeClock())
    try:
        assert site.agent is not None
        site.agent.agent.store_failed()
        site.controller.store_ok = True
        assert site._store_ok()  # its controller replica might lead and act
        site.controller.store_ok = False
        assert not site._store_ok()
        site.agent.agent.store_ok = True
        assert site._store_ok()
    finally:
        site.heartbeats.close()
