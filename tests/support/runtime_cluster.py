"""The runtime's agents and controllers together on one store, driven by a fake clock.

``Cluster`` wires a ``SiteAgentRuntime`` for the worker sites a and b and a
``ControllerRuntime`` for a, b and w to one shared store (any ``CoordinationStore``:
memory, sqlite, the Kubernetes store on its API double) and runs them on the runtime's
schedule (renew every 0.25 s, poll and controller tick every 0.1 s, direct heartbeats every
0.2 s) in steps of 0.05 s of fake time. After every step it asks every agent process it
ever started, driven or not, which shards it serves now, and records each break of the
invariants of ARCHITECTURE.md section 3: two processes serving one shard, an epoch served
after a newer one was committed for that shard, one epoch served by two processes, two
controllers that both believe they lead.

A stopped process is no longer driven but is still asked (a paused or cut-off site whose
router still receives work), so "the minority fences first" is checked as it would bite.
Used by ``tests/unit/test_runtime.py`` and the Kubernetes scenarios.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from failover.adapters.fake_clock import FakeClock
from failover.core.agent import LeaseRecord
from failover.core.controller import Decision, DecisionKind, PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import default_topology
from failover.ports import CoordinationStore
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import lease_key, ownership_key
from failover.runtime.site_agent import SiteAgentRuntime

STEP_S = 0.05
POLL_INTERVAL_S = 0.1
TICK_INTERVAL_S = 0.1
EPSILON_S = 1e-6  # float noise of the fake clock's sums, far below one step
TIMING = LeaseTiming()
DETECTOR = DetectorTiming()
TOPOLOGY = default_topology(shards_per_component=4)
WORKERS = TOPOLOGY.workers
SITES = TOPOLOGY.site_names
COMPONENTS = TOPOLOGY.components
SHARDS = TOPOLOGY.shards_per_component
ALL_SHARDS = [(c, i) for c in COMPONENTS for i in range(SHARDS)]

Shard = tuple[str, int]


def _every(interval_s: float) -> int:
    steps = round(interval_s / STEP_S)
    assert steps >= 1 and math.isclose(steps * STEP_S, interval_s), interval_s
    return steps


RENEW_EVERY = _every(TIMING.renew_interval_s)
POLL_EVERY = _every(POLL_INTERVAL_S)
TICK_EVERY = _every(TICK_INTERVAL_S)
HEARTBEAT_EVERY = _every(TIMING.heartbeat_interval_s)


@dataclass(frozen=True)
class Commit:
    """One decision a controller wrote, with the worker leases as stored at that moment."""

    at_s: float
    by: str
    decision: Decision
    previous: Ownership
    leases: dict[str, LeaseRecord | None]


class Cluster:
    """Two agents and three controllers on one store, stepped by hand."""

    def __init__(self, store: CoordinationStore) -> None:
        self.store = store
        self.clock = FakeClock()
        self.down: set[tuple[str, str]] = set()  # (site, component) whose probe fails
        self.link_up = True  # direct heartbeats between the agents
        self.last_heartbeat_s: float | None = None
        self.steps = 0
        self.commits: list[Commit] = []
        self.violations: list[str] = []
        self.fences: list[tuple[float, str]] = []  # (when, process) an agent fenced itself
        self.last_served: dict[str, float] = {}  # process -> last time it served any shard
        self.serving_now: dict[Shard, dict[str, int]] = {}  # shard -> {process: epoch}
        self._committed_epoch: dict[Shard, int] = {}
        self._epoch_holder: dict[tuple[str, int, int], str] = {}
        self._fence_counts: dict[str, int] = {}
        self.processes: list[tuple[str, SiteAgentRuntime]] = []  # every agent ever started
        self.agents: dict[str, SiteAgentRuntime] = {}
        self.labels: dict[str, str] = {}  # site -> its current agent process
        self.generations: dict[str, int] = {}  # site -> agent processes started
        self.controller_processes: list[ControllerRuntime] = []
        self.controllers: dict[str, ControllerRuntime] = {}
        self.running_agents: set[str] = set()
        self.running_controllers: set[str] = set()
        self.hung: set[tuple[str, str]] = set()  # probes unanswered, process still there
        for w in WORKERS:
            self.start_agent(w)
        for s in SITES:
            self.start_controller(s)

    # -- processes --------------------------------------------------------------------

    def start_agent(self, site: str) -> SiteAgentRuntime:
        """A new agent process for ``site`` (its previous one, if any, keeps being asked)."""
        agent = SiteAgentRuntime(
            site,
            store=self.store,
            clock=self.clock,
            topology=TOPOLOGY,
            timing=TIMING,
            detector=DETECTOR,
            probe=lambda c: (site, c) not in self.down and (site, c) not in self.hung,
            exited=lambda c: (site, c) in self.down,
        )
        self.generations[site] = self.generations.get(site, 0) + 1
        label = f"{site}/{self.generations[site]}"
        self.processes.append((label, agent))
        self.agents[site], self.labels[site] = agent, label
        self.running_agents.add(site)
        return agent

    def crash_agent(self, site: str) -> None:
        """The process is gone: neither driven nor asked any more."""
        self.running_agents.discard(site)
        self.processes = [(lbl, p) for lbl, p in self.processes if p is not self.agents[site]]

    def start_controller(self, site: str) -> ControllerRuntime:
        controller = ControllerRuntime(
            site,
            store=self.store,
            clock=self.clock,
            topology=TOPOLOGY,
            timing=TIMING,
            detector=DETECTOR,
            policy=PlacementPolicy(),
            trace_id=lambda: f"{site}-{self.steps}",
            on_commit=lambda d, previous: self._committed(site, d, previous),
        )
        self.controller_processes.append(controller)
        self.controllers[site] = controller
        self.running_controllers.add(site)
        return controller

    def stop(self, site: str) -> None:
        """The whole site stops being driven (its agent is still asked whether it serves)."""
        self.running_agents.discard(site)
        self.running_controllers.discard(site)

    def _committed(self, by: str, decision: Decision, previous: Ownership) -> None:
        leases: dict[str, LeaseRecord | None] = {}
        for w in WORKERS:
            got = self.store.get(lease_key(w))
            try:
                leases[w] = LeaseRecord.from_doc(got.value) if got else None
            except ValueError:
                leases[w] = None
        self.commits.append(Commit(self.now(), by, decision, previous, leases))
        for i, a in enumerate(decision.ownership.shards):
            shard = (decision.component, i)
            self._committed_epoch[shard] = max(self._committed_epoch.get(shard, 0), a.epoch)

    # -- driving ----------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.monotonic()

    def step(self) -> None:
        """Advance one step, run what is due at the new time, then check the invariants."""
        self.clock.advance(STEP_S)
        k, self.steps = self.steps, self.steps + 1
        for w in WORKERS:
            if w in self.running_agents:
                if k % RENEW_EVERY == 0:
                    self.agents[w].renew()
                if k % POLL_EVERY == 0:
                    self.agents[w].poll()
        if self.link_up and k % HEARTBEAT_EVERY == 0:
            self.last_heartbeat_s = self.now()
            for sender in self.running_agents:
                for receiver in self.running_agents - {sender}:
                    self.agents[receiver].heard_peer(
                        sender, store_ok=self.agents[sender].agent.store_ok
                    )
            if "w" in self.running_controllers:  # the witness: what its controller saw
                for receiver in self.running_agents:
                    self.agents[receiver].heard_peer("w", store_ok=self.controllers["w"].store_ok)
        if k % TICK_EVERY == 0:
            for s in SITES:
                if s in self.running_controllers:
                    self.controllers[s].tick()
        self._check()

    def _check(self) -> None:
        now = self.now()
        leaders = [c.site for c in self.controller_processes if c.leading(now)]
        if len(leaders) > 1:
            self.violations.append(f"{now:.2f}: controllers {leaders} all lead")
        for c, i in ALL_SHARDS:
            servers = {}
            for label, agent in self.processes:
                epoch = agent.serving(c, i)
                if epoch is not None:
                    servers[label] = epoch
                    self.last_served[label] = now
            self.serving_now[(c, i)] = servers
            if len(servers) > 1:
                self.violations.append(f"{now:.2f}: {c}/{i} served by {servers}")
            for label, epoch in servers.items():
                if epoch < self._committed_epoch.get((c, i), 0):
                    self.violations.append(
                        f"{now:.2f}: {label} serves {c}/{i} under epoch {epoch}, superseded "
                        f"by {self._committed_epoch[(c, i)]}"
                    )
                holder = self._epoch_holder.setdefault((c, i, epoch), label)
                if holder != label:
                    self.violations.append(
                        f"{now:.2f}: {c}/{i} epoch {epoch} served by {holder} and {label}"
                    )
        for label, agent in self.processes:
            if agent.agent.fence_count > self._fence_counts.get(label, 0):
                self._fence_counts[label] = agent.agent.fence_count
                self.fences.append((now, label))

    def run(self, seconds: float, *, each: Callable[[], None] | None = None) -> None:
        for _ in range(round(seconds / STEP_S)):
            self.step()
            if each is not None:
                each()

    def run_until(self, done: Callable[[], bool], *, limit_s: float, what: str) -> float:
        """Step until ``done()``; the fake time of the step that got there."""
        for _ in range(round(limit_s / STEP_S)):
            self.step()
            if done():
                return self.now()
        raise AssertionError(f"not within {limit_s} s of fake time: {what}")

    def align_to_renewal(self) -> None:
        """Step until the next step is a renewal step."""
        while self.steps % RENEW_EVERY:
            self.step()

    # -- reading ----------------------------------------------------------------------

    def ownership(self, component: str) -> Ownership:
        got = self.store.get(ownership_key(component))
        assert got is not None, component
        return Ownership.from_doc(got.value)

    def served_by_owner(self, component: str, *, sites: tuple[str, ...] = WORKERS) -> bool:
        """Every shard of the component owned by one of ``sites`` and served by exactly it."""
        got = self.store.get(ownership_key(component))
        if got is None:
            return False
        doc = Ownership.from_doc(got.value)
        return all(
            a.owner in sites
            and not a.draining
            and self.serving_now[(component, i)] == {self.labels[a.owner]: a.epoch}
            for i, a in enumerate(doc.shards)
        )

    def settled(self, *, sites: tuple[str, ...] = WORKERS) -> bool:
        return all(self.served_by_owner(c, sites=sites) for c in COMPONENTS)

    def even(self) -> bool:
        return all(self.ownership(c).counts(WORKERS) == {"a": 2, "b": 2} for c in COMPONENTS)

    def leaders(self) -> list[str]:
        now = self.now()
        return [s for s, c in self.controllers.items() if c.leading(now)]

    def commits_since(self, t_s: float) -> list[Commit]:
        return [m for m in self.commits if m.at_s > t_s]


def kinds(commits: list[Commit]) -> list[tuple[DecisionKind, str]]:
    return [(m.decision.kind, m.decision.component) for m in commits]


def started(store: CoordinationStore) -> Cluster:
    cluster = Cluster(store)
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=3.0, what="start-up")
    cluster.run(0.5)
    return cluster
