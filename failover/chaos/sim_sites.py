"""Simulated site processes: the worker's agent and router, and every site's controller.

The agent and the controller are the runtime's own classes (``SiteAgentRuntime``,
``ControllerRuntime``) over a simulated store and clock, so the simulation exercises the
code that runs for real. Each process acts only on what it actually received: its own
store reads (which fail when the simulated network says so) and the direct heartbeats
that reached it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from failover.chaos.sim_world import SimClock, SimSiteStore
from failover.runtime.controller import ControllerRuntime
from failover.runtime.site_agent import SiteAgentRuntime

if TYPE_CHECKING:
    from failover.chaos.simulation import Simulation


@dataclass
class Message:
    """A producer's message; ``attempt`` tells its retries apart."""

    message_id: int
    component: str
    index: int
    first_sent_s: float
    attempt: int = 0
    attempt_sent_s: float = 0.0
    done: bool = False


class WorkerProc:
    """A worker site's BFM process: the agent (lease, heartbeats, probes) and the router."""

    def __init__(self, sim: Simulation, site: str) -> None:
        cfg = sim.config
        self.sim, self.site = sim, site
        self.dead = False
        self.in_flight: dict[tuple[int, int], Message] = {}
        self.inbox: list[tuple[Message, int]] = []
        self.frozen: list[tuple[Message, int, int, float]] = []
        self.runtime = SiteAgentRuntime(
            site,
            store=SimSiteStore(sim.store, site),
            clock=SimClock(lambda: sim.now),
            topology=cfg.topology,
            timing=cfg.timing,
            detector=cfg.detector,
            probe=lambda component: sim.component_alive(site, component),
            busy=lambda: {(m.component, m.index) for m in self.in_flight.values()},
            fencing_enabled=cfg.fencing_enabled,
        )
        self.agent = self.runtime.agent
        self.detectors = self.runtime.detectors
        sim.every(cfg.timing.renew_interval_s, self.renew, owner=self)
        sim.every(cfg.poll_interval_s, self.poll, owner=self)
        sim.every(cfg.timing.heartbeat_interval_s, self.heartbeat, owner=self)

    def alive(self) -> bool:
        return not self.dead and self.sim.net.running(self.site)

    def renew(self) -> None:
        if self.alive():
            self.runtime.renew()

    def poll(self) -> None:
        if self.alive() and self.runtime.poll():
            self.sim.on_fence(self.site)

    def heartbeat(self) -> None:
        if not self.alive():
            return
        net = self.sim.net
        for peer in self.sim.config.topology.workers:
            proc = self.sim.workers.get(peer)
            if peer == self.site or proc is None or not proc.alive():
                continue
            if net.link(self.site, peer):
                proc.runtime.heard_peer(self.site, store_ok=self._site_store_ok(self.site))
                if net.link(peer, self.site):
                    self.runtime.heard_peer(peer, store_ok=self._site_store_ok(peer))
        # The sites without an agent (the witness) send what their controller replica saw.
        for site, controller in self.sim.controllers.items():
            if site in self.sim.workers or controller.dead or not net.running(site):
                continue
            if net.link(site, self.site) and net.link(self.site, site):
                self.runtime.heard_peer(site, store_ok=self._site_store_ok(site))

    def _site_store_ok(self, site: str) -> bool:
        """What a site's heartbeats say (as SiteProcess does): "down" only when neither its
        agent's last renewal nor its live controller replica's last round reached the store."""
        proc = self.sim.workers.get(site)
        controller = self.sim.controllers.get(site)
        agent_ok = proc is not None and proc.agent.store_ok
        controller_ok = (
            controller is not None and not controller.dead and controller.runtime.store_ok
        )
        return agent_ok or controller_ok

    def serving(self, component: str, index: int) -> int | None:
        """The epoch under which this site would accept work for the shard now, or None."""
        return self.runtime.serving(component, index) if self.alive() else None

    def receive(self, msg: Message, attempt: int) -> tuple[str, str | None]:
        """Router: 'pending' (applied after the processing delay), 'refused' or 'queued'.

        A refusal names the owner this site knows of (a redirect, as Redis's MOVED), so
        producers find the new owner even while the store is out.
        """
        if not self.sim.net.running(self.site):
            self.inbox.append((msg, attempt))
            return "queued", None
        grant = self.runtime.serving_until(msg.component, msg.index) if self.alive() else None
        if grant is None:
            owner = self.runtime.owner_of(msg.component, msg.index)
            return "refused", owner if owner != self.site else None
        epoch, deadline_s = grant
        self.in_flight[(msg.message_id, attempt)] = msg
        delay_s = self.sim.config.process_delay_s
        self.sim.at(self.sim.now + delay_s, self.apply, msg, attempt, epoch, deadline_s)
        return "pending", None

    def apply(self, msg: Message, attempt: int, epoch: int, deadline_s: float) -> None:
        if self.dead:
            return
        if self.site in self.sim.net.hung:
            self.frozen.append((msg, attempt, epoch, deadline_s))  # paused after the router's check
            return
        self.in_flight.pop((msg.message_id, attempt), None)
        if not self.sim.component_alive(self.site, msg.component):
            self.sim.producer.failed(msg, attempt)
            return
        self.sim.sink_apply(self.site, msg, attempt, epoch, deadline_s)

    def crashed(self) -> None:
        """The process died: connections reset, in-memory state gone."""
        self.dead = True
        for (_, attempt), msg in self.in_flight.items():
            self.sim.producer.failed(msg, attempt)
        self.in_flight.clear()

    def hung(self) -> None:
        for (_, attempt), msg in self.in_flight.items():
            self.sim.producer.wait_for(msg, attempt)

    def resumed(self) -> None:
        """SIGCONT: first finish what was frozen mid-way (no new check), then the inbox."""
        frozen, self.frozen = self.frozen, []
        for msg, attempt, epoch, deadline_s in frozen:
            self.in_flight.pop((msg.message_id, attempt), None)
            self.sim.sink_apply(self.site, msg, attempt, epoch, deadline_s)
        inbox, self.inbox = self.inbox, []
        for msg, attempt in inbox:
            if self.receive(msg, attempt)[0] == "refused":
                self.sim.producer.failed(msg, attempt)


class ControllerProc:
    """A site's controller replica (leader election, observation, decisions)."""

    def __init__(self, sim: Simulation, site: str) -> None:
        cfg = sim.config
        self.sim, self.site = sim, site
        self.dead = False
        self.runtime = ControllerRuntime(
            site,
            store=SimSiteStore(sim.store, site),
            clock=SimClock(lambda: sim.now),
            topology=cfg.topology,
            timing=cfg.timing,
            detector=cfg.detector,
            policy=cfg.policy,
            trace_id=lambda: f"{site}-{sim.steps:x}",
            on_commit=sim.committed,
        )
        sim.every(cfg.controller_interval_s, self.tick, owner=self)

    def leading(self, now_s: float) -> bool:
        return self.runtime.leading(now_s)

    def tick(self) -> None:
        if self.dead or not self.sim.net.running(self.site):
            return
        self.runtime.tick()
        if self.runtime.leading(self.sim.now):
            self.sim.check_one_leader(self.site)
