"""Simulated site processes: the worker's agent and router, and every site's controller.

Each one acts only on what it actually received: its own store reads (which fail when the
simulated network says so) and the direct heartbeats that reached it. The decisions are
made by the real core code (``SiteAgent``, ``decide``, ``LeaseObserver``, ``Stability``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from failover.core.agent import LeaseRecord, SiteAgent
from failover.core.controller import SiteView, decide
from failover.core.detector import ComponentDetector, Health, Stability
from failover.core.fencing import Ownership, unowned
from failover.core.quorum import LeaseObserver
from failover.ports import Conflict, StoreUnavailable

if TYPE_CHECKING:
    from failover.chaos.simulation import Simulation

LEADER_KEY = "controller/leader"


def lease_key(site: str) -> str:
    return f"sites/{site}/lease"


def ownership_key(component: str) -> str:
    return f"ownership/{component}"


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
    """A worker site's BFM process: lease, heartbeats, component probes, and the router."""

    def __init__(self, sim: Simulation, site: str) -> None:
        cfg = sim.config
        self.sim, self.site = sim, site
        self.dead = False
        self.agent = SiteAgent(
            site,
            timing=cfg.timing,
            peers=cfg.topology.workers,
            fencing_enabled=cfg.fencing_enabled,
        )
        self.docs: dict[str, Ownership] = {}
        self.doc_revisions: dict[str, int] = {}
        self.detectors = {c: ComponentDetector(cfg.detector) for c in cfg.topology.components}
        self.reported: tuple[tuple[str, ...], tuple[tuple[str, int, int], ...]] = ((), ())
        self.in_flight: dict[tuple[int, int], Message] = {}
        self.inbox: list[tuple[Message, int]] = []
        self.frozen: list[tuple[Message, int, int]] = []
        self._drained_key: object = None
        self._drained: tuple[tuple[str, int, int], ...] = ()
        sim.every(cfg.timing.renew_interval_s, self.renew, owner=self)
        sim.every(cfg.poll_interval_s, self.poll, owner=self)
        sim.every(cfg.timing.heartbeat_interval_s, self.heartbeat, owner=self)

    def alive(self) -> bool:
        return not self.dead and self.sim.net.running(self.site)

    def components_up(self) -> tuple[str, ...]:
        return tuple(c for c, d in self.detectors.items() if d.health is not Health.DOWN)

    def renew(self) -> None:
        if not self.alive():
            return
        sim, now = self.sim, self.sim.now
        try:
            current = sim.store.get(self.site, lease_key(self.site))
            if current is not None and isinstance(current[0], LeaseRecord):
                self.agent.continue_from(current[0])
            record = self.agent.lease_record(
                wall_s=now, components_up=self.components_up(), drained=self.drained()
            )
            sim.store.put(
                self.site,
                lease_key(self.site),
                record,
                expected_revision=current[1] if current else None,
            )
        except StoreUnavailable:
            self.agent.store_failed()
            return
        except Conflict:
            return
        self.agent.renewed(record, started_at_s=now)
        self.reported = (record.components_up, record.drained)

    def poll(self) -> None:
        if not self.alive():
            return
        sim = self.sim
        for c, detector in self.detectors.items():
            alive = sim.component_alive(self.site, c)
            detector.probe(ok=alive, exited=not alive)
        try:
            for c in sim.config.topology.components:
                got = sim.store.get(self.site, ownership_key(c))
                if got is not None and got[1] != self.doc_revisions.get(c):
                    assert isinstance(got[0], Ownership)
                    self.docs[c], self.doc_revisions[c] = got[0], got[1]
        except StoreUnavailable:
            pass  # the renewal, not a read, tells the agent whether the store is back
        fences = self.agent.fence_count
        self.agent.check(sim.now)
        if self.agent.fence_count > fences:
            sim.on_fence(self.site)
        drained = self.drained()
        if (tuple(sorted(self.components_up())), drained) != self.reported:
            self.renew()  # tell the controller at once, not at the next renewal

    def drained(self) -> tuple[tuple[str, int, int], ...]:
        busy = frozenset((m.component, m.index) for m in self.in_flight.values())
        key = (tuple(self.doc_revisions.values()), self.agent.session, busy)
        if key != self._drained_key:
            self._drained_key = key
            self._drained = tuple(sorted(self.agent.drained(self.docs.values(), busy=busy)))
        return self._drained

    def heartbeat(self) -> None:
        if not self.alive():
            return
        net, now = self.sim.net, self.sim.now
        for peer in self.sim.config.topology.workers:
            proc = self.sim.workers.get(peer)
            if peer == self.site or proc is None or not proc.alive():
                continue
            if net.link(self.site, peer):
                proc.agent.heard_peer(self.site, store_ok=self.agent.store_ok, now_s=now)
                if net.link(peer, self.site):
                    self.agent.heard_peer(peer, store_ok=proc.agent.store_ok, now_s=now)

    def serving(self, component: str, index: int) -> int | None:
        """The epoch under which this site would accept work for the shard now, or None."""
        doc = self.docs.get(component)
        if doc is None or not self.alive():
            return None
        a = doc.shards[index]
        ok = self.agent.may_serve(
            a,
            component=component,
            index=index,
            now_s=self.sim.now,
            component_up=self.sim.component_alive(self.site, component),
        )
        return a.epoch if ok else None

    def receive(self, msg: Message, attempt: int) -> tuple[str, str | None]:
        """Router: 'pending' (applied after the processing delay), 'refused' or 'queued'.

        A refusal names the owner this site knows of (a redirect, as Redis's MOVED), so
        producers find the new owner even while the store is out.
        """
        if not self.sim.net.running(self.site):
            self.inbox.append((msg, attempt))
            return "queued", None
        epoch = self.serving(msg.component, msg.index)
        if epoch is None:
            doc = self.docs.get(msg.component)
            owner = doc.shards[msg.index].owner if doc else None
            return "refused", owner if owner != self.site else None
        self.in_flight[(msg.message_id, attempt)] = msg
        self.sim.at(self.sim.now + self.sim.config.process_delay_s, self.apply, msg, attempt, epoch)
        return "pending", None

    def apply(self, msg: Message, attempt: int, epoch: int) -> None:
        if self.dead:
            return
        if self.site in self.sim.net.hung:
            self.frozen.append((msg, attempt, epoch))  # paused after the router's check
            return
        self.in_flight.pop((msg.message_id, attempt), None)
        if not self.sim.component_alive(self.site, msg.component):
            self.sim.producer.failed(msg, attempt)
            return
        self.sim.sink_apply(self.site, msg, attempt, epoch)

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
        for msg, attempt, epoch in frozen:
            self.in_flight.pop((msg.message_id, attempt), None)
            self.sim.sink_apply(self.site, msg, attempt, epoch)
        inbox, self.inbox = self.inbox, []
        for msg, attempt in inbox:
            if self.receive(msg, attempt)[0] == "refused":
                self.sim.producer.failed(msg, attempt)


class ControllerProc:
    """A site's controller: leader election, site observation, and (as leader) decisions."""

    def __init__(self, sim: Simulation, site: str) -> None:
        cfg = sim.config
        self.sim, self.site = sim, site
        self.dead = False
        lease_s = cfg.timing.lease_duration_s
        self.leader_observer = LeaseObserver(lease_duration_s=lease_s)
        self.observers = {w: LeaseObserver(lease_duration_s=lease_s) for w in cfg.topology.workers}
        self.records: dict[str, LeaseRecord | None] = {}
        self.stability = {
            (w, c): Stability(cfg.detector)
            for w in cfg.topology.workers
            for c in cfg.topology.components
        }
        self.leader_since_s: float | None = None
        self.renewed_at_s: float | None = None
        self.leader_revision: int | None = None
        self.last_inputs: object = None
        self.last_ups: dict[str, frozenset[str]] = {}
        sim.every(cfg.controller_interval_s, self.tick, owner=self)

    def leading(self, now_s: float) -> bool:
        return (
            self.renewed_at_s is not None
            and now_s - self.renewed_at_s <= self.sim.config.timing.renew_deadline_s
        )

    def tick(self) -> None:
        if self.dead or not self.sim.net.running(self.site):
            return
        try:
            self.elect()
            self.observe_sites()
            if self.leading(self.sim.now):
                self.decide()
        except StoreUnavailable:
            self.leader_observer.read_failed()
            for observer in self.observers.values():
                observer.read_failed()

    def elect(self) -> None:
        sim, now = self.sim, self.sim.now
        got = sim.store.get(self.site, LEADER_KEY)
        record = got[0] if got else None
        assert record is None or isinstance(record, tuple)
        self.leader_observer.observe(record, now)
        if not self.leading(now):
            self.renewed_at_s = None
        mine = record is not None and record[0] == self.site
        if mine and (self.renewed_at_s is not None or (got and got[1] == self.leader_revision)):
            # Still ours: renewing in time, or unchanged since our last write (we only lost
            # the store for a while): nobody else took it, so the CAS keeps it exclusive.
            assert record is not None
            new = (self.site, record[1], record[2] + 1)
        elif record is None or self.leader_observer.expired(now):
            new = (self.site, (record[1] if record else 0) + 1, 0)
        else:
            return
        try:
            self.leader_revision = sim.store.put(
                self.site, LEADER_KEY, new, expected_revision=got[1] if got else None
            )
        except Conflict:
            self.renewed_at_s = None
            return
        self.renewed_at_s = now

    def observe_sites(self) -> None:
        sim, now = self.sim, self.sim.now
        for w, observer in self.observers.items():
            got = sim.store.get(self.site, lease_key(w))
            record = got[0] if got else None
            assert record is None or isinstance(record, LeaseRecord)
            self.records[w] = record
            observer.observe(record.summary() if record else None, now)
            alive = record is not None and not observer.expired(now)
            ups = frozenset(record.components_up) if alive and record is not None else frozenset()
            if ups != self.last_ups.get(w):
                self.last_ups[w] = ups
                for c in sim.config.topology.components:
                    self.stability[(w, c)].update(up=c in ups, now_s=now)

    def views(self) -> dict[str, SiteView]:
        now, views = self.sim.now, {}
        for w, record in self.records.items():
            if record is None:
                continue
            views[w] = SiteView(
                name=w,
                alive=not self.observers[w].expired(now),
                session=record.session,
                components_up=frozenset(record.components_up),
                components_stable=frozenset(
                    c for c in record.components_up if self.stability[(w, c)].stable(now)
                ),
                drained=frozenset(record.drained),
            )
        return views

    def decide(self) -> None:
        sim, topology = self.sim, self.sim.config.topology
        sim.check_one_leader(self.site)
        current: dict[str, Ownership] = {}
        revisions: dict[str, int | None] = {}
        for c in topology.components:
            got = sim.store.get(self.site, ownership_key(c))
            if got is None:
                current[c], revisions[c] = unowned(c, topology.shards_per_component), None
            else:
                assert isinstance(got[0], Ownership)
                current[c], revisions[c] = got[0], got[1]
        views = self.views()
        inputs = (tuple(revisions.values()), tuple(views.values()))
        if inputs == self.last_inputs:
            return  # nothing new since the last round, which decided nothing
        trace_id = f"{self.site}-{sim.steps:x}"
        decisions = decide(topology, current, views, sim.config.policy, trace_id=trace_id)
        self.last_inputs = None if decisions else inputs
        for d in decisions:
            try:
                sim.store.put(
                    self.site,
                    ownership_key(d.component),
                    d.ownership,
                    expected_revision=revisions[d.component],
                )
            except Conflict:
                continue
            sim.committed(d, current[d.component])
