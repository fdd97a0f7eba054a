"""One deterministic simulated run: three sites, a network, a store, producers, and faults.

Discrete events on a simulated monotonic clock. Invariants (ARCHITECTURE.md section 3) are
checked at every event that can change who serves a shard; loss, stale accepts and dual
owners are judged afterwards from the history by ``failover.chaos.history.check``.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from failover.chaos.history import History, LedgerEntry, check, unavailability_by_fault
from failover.chaos.report import FaultEvent, Report, Violation
from failover.chaos.sim_faults import Fault, check_targets
from failover.chaos.sim_producer import Producer
from failover.chaos.sim_sites import ControllerProc, Message, WorkerProc
from failover.chaos.sim_world import Net, SimConfig, SimStore
from failover.core.controller import Decision, DecisionKind
from failover.core.detector import Health
from failover.core.fencing import EpochFence, Ownership
from failover.core.placement import is_even
from failover.runtime.documents import ownership_key, ownership_parser

HEAL_LABELS = {"site_crash:heal": "site_return"}
DECISION_LOG_LIMIT = 10_000
MAX_VIOLATION_DETAILS_PER_INVARIANT = 10
GRANTS = (DecisionKind.INITIAL, DecisionKind.FAILOVER, DecisionKind.TRANSFER)


class _Owned(Protocol):
    dead: bool


class Simulation:
    def __init__(self, config: SimConfig, faults: Sequence[Fault], seed: int) -> None:
        check_targets(faults, config.topology)
        self.config = config
        self.faults = list(faults)
        self.rng = random.Random(seed)
        self.now = 0.0
        self.steps = 0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        topology = config.topology
        self.net = Net(topology.site_names)
        self.store = SimStore(self.net)
        self.history = History()
        self.violations: list[Violation] = []
        self.decisions: Counter[str] = Counter()
        self.decision_log: list[tuple[float, Decision]] = []
        self.violation_counts: Counter[str] = Counter()
        self.fence_margins: list[float] = []
        self.crashed_components: Counter[tuple[str, str]] = Counter()
        self.fences = {w: EpochFence(enforce=config.fencing_enabled) for w in topology.workers}
        self.applied = {w: set[int]() for w in topology.workers}
        self.sink_revisions: dict[str, dict[str, str]] = {w: {} for w in topology.workers}
        self._ownership = ownership_parser()
        self.last_change_s = 0.0
        self.workers = {w: WorkerProc(self, w) for w in topology.workers}
        self.controllers = {s: ControllerProc(self, s) for s in topology.site_names}
        self.producer = Producer(self)
        self.every(config.poll_interval_s, self.refresh_sinks, owner=None)
        for fault in self.faults:
            self._schedule(fault)

    # -- the event loop -------------------------------------------------------------
    def at(self, at_s: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_s, self._seq, fn, args))

    def every(self, interval_s: float, fn: Callable[[], None], *, owner: _Owned | None) -> None:
        def tick() -> None:
            if owner is not None and owner.dead:
                return
            fn()
            self.at(self.now + interval_s, tick)

        self.at(self.now + self.rng.uniform(0.0, interval_s), tick)

    def run(self) -> Report:
        end_s = self.config.duration_s
        while self._queue and self._queue[0][0] <= end_s:
            at_s, _, fn, args = heapq.heappop(self._queue)
            self.now = at_s
            self.steps += 1
            fn(*args)
        self.now = end_s
        return self._report()

    # -- the sinks (modules + ledger), one per worker site, durable across crashes ----
    def component_alive(self, site: str, component: str) -> bool:
        return self.crashed_components.get((site, component), 0) == 0

    def refresh_sinks(self) -> None:
        for site, fence in self.fences.items():
            if site in self.net.crashed or not self.net.store_ok(site):
                continue
            for c in self.config.topology.components:
                got = self.store.get(site, ownership_key(c))
                if got is None or got.revision == self.sink_revisions[site].get(c):
                    continue
                self.sink_revisions[site][c] = got.revision
                for i, a in enumerate(self._ownership(got).shards):
                    fence.learn(c, i, a.epoch)

    def sink_apply(
        self, site: str, msg: Message, attempt: int, epoch: int, deadline_s: float
    ) -> None:
        """The module and ledger: refuse a superseded epoch, or a grant whose lease ran out
        (the router's deadline, on this site's clock), deduplicate, record, acknowledge."""
        late = self.now > deadline_s and self.config.fencing_enabled
        if late or not self.fences[site].admit(msg.component, msg.index, epoch):
            self.producer.failed(msg, attempt)
            return
        if msg.message_id not in self.applied[site]:  # modules deduplicate by message id
            self.applied[site].add(msg.message_id)
            shard = (msg.component, msg.index)
            self.history.apply(LedgerEntry(self.now, msg.message_id, shard, epoch, site))
        self.producer.acked(msg)

    # -- invariants checked as the run goes -----------------------------------------
    def violation(self, invariant: str, detail: str) -> None:
        self.violation_counts[invariant] += 1
        if self.violation_counts[invariant] <= MAX_VIOLATION_DETAILS_PER_INVARIANT:
            self.violations.append(Violation(invariant, self.now, detail))

    def committed(self, decision: Decision, before: Ownership) -> None:
        self.decisions[decision.kind.value] += 1
        if len(self.decision_log) < DECISION_LOG_LIMIT:
            self.decision_log.append((self.now, decision))
        if decision.kind not in GRANTS:
            return
        c = decision.component
        for i in decision.shards:
            new = decision.ownership.shards[i]
            self.history.commit((c, i), new.epoch, self.now)
            old = before.shards[i]
            proc = self.workers.get(old.owner) if old.owner else None
            if proc is None or proc.dead:
                continue
            if proc.serving(c, i) is not None:
                self.violation(
                    "minority_fences_first",
                    f"{c}/{i} granted to {new.owner} under epoch {new.epoch} while "
                    f"{old.owner} still serves it under epoch {old.epoch}",
                )
            given_up = old.epoch <= proc.agent.released.get(c, 0)  # reported down earlier
            if (
                decision.kind is DecisionKind.FAILOVER
                and proc.detectors[c].health is not Health.DOWN
                and not given_up
            ):
                self._fence_margin(proc, old.session)

    def _fence_margin(self, proc: WorkerProc, session: int) -> None:
        """How long before this takeover (of a live site judged by its lease) its right ended."""
        agent = proc.agent
        if agent.session != session or agent.last_renew_start_s is None:
            return  # it had re-acquired under a new session: the old grant was void anyway
        deadline_s = agent.last_renew_start_s + self.config.timing.renew_deadline_s
        margin_s = self.now - deadline_s
        if margin_s < 0 and not agent.failsafe(self.now) and self.config.fencing_enabled:
            self.violation(
                "minority_fences_first",
                f"{proc.site}'s shards taken over {-margin_s:.3f} s before its renew deadline",
            )
        if margin_s >= 0:
            self.fence_margins.append(margin_s)

    def check_serving(self, site: str) -> None:
        """Single writer: a site never serves a shard under a superseded epoch."""
        proc = self.workers[site]
        for c in self.config.topology.components:
            for i in range(self.config.topology.shards_per_component):
                epoch = proc.serving(c, i)
                current = self.history.epoch_at((c, i), self.now)
                if epoch is not None and epoch < current:
                    self.violation(
                        "single_writer",
                        f"{site} serves {c}/{i} under epoch {epoch}; epoch {current} is current",
                    )

    def check_one_leader(self, site: str) -> None:
        others = [s for s, p in self.controllers.items() if s != site and p.leading(self.now)]
        if others and self.net.running(others[0]):
            self.violation("one_leader", f"controllers {site} and {others[0]} both lead")

    def on_fence(self, site: str) -> None:
        """Failsafe: a store-only outage with both workers in touch must not fence anyone."""
        stable_s = self.now - self.last_change_s
        if (
            self.net.store_outages
            and self.net.quiet()
            and stable_s > self.config.timing.lease_duration_s
            and self.config.fencing_enabled
        ):
            self.violation(
                "control_plane_failsafe",
                f"{site} fenced itself during a store-only outage with its peer in reach",
            )

    # -- faults -----------------------------------------------------------------------
    def _schedule(self, fault: Fault) -> None:
        if fault.kind == "flapping":
            t = fault.at_s
            end_s = fault.at_s + fault.duration_s
            while t < end_s:
                self.at(t, self._inject, fault)
                self.at(min(t + fault.flap_down_s, end_s), self._heal, fault)
                t += fault.flap_down_s + fault.flap_up_s
        else:
            self.at(fault.at_s, self._inject, fault)
            self.at(fault.at_s + fault.duration_s, self._heal, fault)

    def _links(self, fault: Fault) -> list[tuple[str, str]]:
        if fault.kind in ("partition", "flapping"):
            x = fault.target
            others = [s for s in self.net.sites if s != x]
            return [(x, y) for y in others] + [(y, x) for y in others]
        if fault.kind == "link_cut":
            x, y = fault.target.split("-")
            return [(x, y), (y, x)]
        if fault.kind == "one_way_cut":
            x, y = fault.target.split(">")
            return [(x, y)]
        return []

    def _inject(self, fault: Fault) -> None:
        self.history.faults.append(FaultEvent(self.now, fault.kind, fault.target, "inject"))
        self.last_change_s = self.now if fault.kind != "store_outage" else self.last_change_s
        net, kind, target = self.net, fault.kind, fault.target
        if kind == "site_crash":
            if target not in net.crashed:
                if target in self.workers:
                    self.workers[target].crashed()
                self.controllers[target].dead = True
            net.crashed.add(target)
        elif kind == "hang":
            net.hung.add(target)
            if target in self.workers:
                self.workers[target].hung()
        elif kind == "component_crash":
            site, component = target.split("/")
            self.crashed_components[(site, component)] += 1
        elif kind == "store_outage":
            net.store_outages += 1
        for link in self._links(fault):
            net.cuts[link] += 1
        net.changed()

    def _heal(self, fault: Fault) -> None:
        self.history.faults.append(FaultEvent(self.now, fault.kind, fault.target, "heal"))
        self.last_change_s = self.now if fault.kind != "store_outage" else self.last_change_s
        net, kind, target = self.net, fault.kind, fault.target
        if kind == "site_crash" and target in net.crashed:
            net.crashed.discard(target)
            if target in self.workers:
                self.workers[target] = WorkerProc(self, target)
            self.controllers[target] = ControllerProc(self, target)
        elif kind == "hang" and target in net.hung:
            net.hung.discard(target)
            if target in self.workers and not self.workers[target].dead:
                self.workers[target].resumed()
        elif kind == "component_crash":
            site, component = target.split("/")
            self.crashed_components[(site, component)] -= 1
        elif kind == "store_outage":
            net.store_outages -= 1
        for link in self._links(fault):
            net.cuts[link] -= 1
        net.changed()
        for site in self.workers:
            self.check_serving(site)

    # -- the end of a run --------------------------------------------------------------
    def _final_checks(self, docs: dict[str, Ownership]) -> None:
        topology = self.config.topology
        workers = list(topology.workers)
        weights = {w: topology.weight(w) for w in workers}
        for c, doc in docs.items():
            owners = [a.owner for a in doc.shards]
            if not is_even(owners, workers, weights) or any(a.draining for a in doc.shards):
                counts = doc.counts(workers)
                self.violation("even", f"{c} not even at the end of a quiet period: {counts}")

    def _report(self) -> Report:
        topology = self.config.topology
        docs: dict[str, Ownership] = {}
        for c in topology.components:
            got = self.store.data.get(ownership_key(c))  # the checker reads the truth
            if got is not None:
                docs[c] = self._ownership(got)
        if len(docs) < len(topology.components):
            self.violation("even", "some components were never placed")
        self._final_checks(docs)
        verdict = check(self.history)
        if verdict.acked_lost:
            self.violation(
                "no_acked_loss",
                f"{verdict.acked_lost} acknowledged message(s) lost, "
                f"first ids {verdict.lost_ids[:5]}",
            )
        if verdict.stale_epoch_accepts:
            first = verdict.stale_entries[0]
            self.violation(
                "single_writer",
                f"{verdict.stale_epoch_accepts} stale-epoch accept(s); first: {first.site} "
                f"applied {first.shard[0]}/{first.shard[1]} under epoch {first.epoch} "
                f"at {first.at_s:.3f} s",
            )
        if verdict.dual_owner_epochs:
            self.violation("dual_owner", f"{verdict.dual_owner_epochs} epoch(s) used by two sites")
        end_s = self.config.duration_s
        waits = [self.history.acked.get(m, end_s) - s for m, s in self.history.sent.items()]
        report = Report(
            acked=verdict.acked,
            acked_lost=verdict.acked_lost,
            duplicates_applied=verdict.duplicates_applied,
            stale_epoch_accepts=verdict.stale_epoch_accepts,
            dual_owner_epochs=verdict.dual_owner_epochs,
            max_unavailability_s=max(waits, default=0.0),
            unavailability_s=unavailability_by_fault(
                self.history, end_s=end_s, fault_kinds=_heal_labels(self.faults)
            ),
            shards_per_site={
                w: {c: d.counts(topology.workers)[w] for c, d in docs.items()}
                for w in topology.workers
            },
            faults=list(self.history.faults),
            violations=list(self.violations),
        )
        report.extra = {
            "steps": self.steps,
            "decisions": dict(self.decisions),
            "violations_by_invariant": dict(self.violation_counts),
            "min_fence_margin_s": round(min(self.fence_margins), 3) if self.fence_margins else None,
        }
        return report


def _heal_labels(faults: Sequence[Fault]) -> dict[str, str]:
    labels = {f"{f.kind}:heal": f"{f.kind}_heal" for f in faults}
    labels.update(HEAL_LABELS)
    return labels
