"""Two site agents and one controller over one store, stepped by hand on a fake clock: the
smallest running system, for tests of what it leaves in the store."""

from __future__ import annotations

from dataclasses import dataclass, field

from failover.adapters.fake_clock import FakeClock
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.quorum import LeaseTiming
from failover.core.topology import Topology, default_topology
from failover.ports import CoordinationStore
from failover.runtime.controller import ControllerRuntime
from failover.runtime.site_agent import SiteAgentRuntime


@dataclass
class SmallSystem:
    store: CoordinationStore
    clock: FakeClock
    topology: Topology = field(default_factory=lambda: default_topology(shards_per_component=4))
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    controller_store: CoordinationStore | None = None  # the controller's view of the store

    def __post_init__(self) -> None:
        self.agents = {
            site: SiteAgentRuntime(
                site,
                store=self.store,
                clock=self.clock,
                topology=self.topology,
                timing=self.timing,
                detector=DetectorTiming(),
                probe=lambda component: True,
            )
            for site in self.topology.workers
        }
        self.controller = ControllerRuntime(
            "w",
            store=self.controller_store or self.store,
            clock=self.clock,
            topology=self.topology,
            timing=self.timing,
            detector=DetectorTiming(),
            policy=PlacementPolicy(),
        )

    def run(self, rounds: int = 30, *, step_s: float = 0.1) -> None:
        """Each round: every agent renews and polls, the controller ticks, time moves on."""
        for _ in range(rounds):
            for agent in self.agents.values():
                agent.renew()
                agent.poll()
            self.controller.tick()
            self.clock.advance(step_s)
