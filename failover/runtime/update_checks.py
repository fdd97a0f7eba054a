"""What the update executor reads to judge its steps: the system's facts, in one snapshot.

``read_snapshot`` reads the leases, the ownership documents, ``admin/policy`` and the
sites' version reports once; the predicates below answer the steps' "done when" questions
(``failover.core.update_steps.StepKind.done_when``) from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from failover.core.fencing import Ownership
from failover.core.placement import is_even
from failover.core.topology import Topology
from failover.core.update_gate import GateSamples
from failover.core.versions import ComponentHealth, quantile_s
from failover.ports import CoordinationStore
from failover.runtime.admin import read_facts
from failover.runtime.documents import ADMIN_POLICY_KEY, AdminPolicy, ownership_key
from failover.runtime.version_docs import ReportedVersions, read_reported

REPORT_FRESH_S = 5.0
"""A site whose version report is older than this counts as down (it reports every second)."""


@dataclass(frozen=True)
class Snapshot:
    """The facts at one moment (wall clock ``now_wall_s``)."""

    now_wall_s: float
    alive_workers: frozenset[str]
    ownerships: Mapping[str, Ownership]
    policy: AdminPolicy
    reports: Mapping[str, ReportedVersions] = field(default_factory=dict)

    def fresh_report(self, site: str, *, since_wall_s: float = 0.0) -> ReportedVersions | None:
        """The site's report if it is recent (and written after ``since_wall_s``)."""
        report = self.reports.get(site)
        if report is None or self.now_wall_s - report.at_wall_s > REPORT_FRESH_S:
            return None
        return report if report.at_wall_s >= since_wall_s else None

    def shards_at(self, site: str) -> dict[str, int]:
        """Component -> how many of its shards the site owns."""
        return {c: sum(1 for a in o.shards if a.owner == site) for c, o in self.ownerships.items()}

    def moving(self) -> list[str]:
        """Components with an orphaned or draining shard (a failover or hand-back runs)."""
        return sorted(
            c
            for c, o in self.ownerships.items()
            if any(a.owner is None or a.draining for a in o.shards)
        )


def read_snapshot(store: CoordinationStore, topology: Topology, *, now_wall_s: float) -> Snapshot:
    alive = read_facts(store, topology, now_wall_s=now_wall_s).alive
    ownerships = {}
    for c in topology.components:
        got = store.get(ownership_key(c))
        if got is not None:
            ownerships[c] = Ownership.from_doc(got.value)
    got = store.get(ADMIN_POLICY_KEY)
    try:
        policy = AdminPolicy.from_doc(got.value) if got is not None else AdminPolicy()
    except ValueError:
        policy = AdminPolicy(reason="damaged")
    return Snapshot(now_wall_s, alive, ownerships, policy, read_reported(store))


def precheck_problems(snap: Snapshot, topology: Topology) -> list[str]:
    """Why an update must not start or continue to the next site now ([] = go)."""
    problems = []
    down = [s for s in topology.workers if s not in snap.alive_workers]
    down += [s for s in topology.site_names if snap.fresh_report(s) is None and s not in down]
    if down:
        problems.append(f"site(s) {', '.join(sorted(down))} down or not reporting")
    if len(snap.ownerships) < len(topology.components):
        problems.append("not every component has an owner yet (the system is starting)")
    if moving := snap.moving():
        problems.append(f"a failover or hand-back is running for {', '.join(moving)}")
    if snap.policy.drained_sites:
        problems.append(f"site(s) {', '.join(snap.policy.drained_sites)} drained by an operator")
    if snap.policy.pinned:
        problems.append(f"component(s) {', '.join(snap.policy.pinned)} pinned by a switchover")
    if snap.policy.canary:
        problems.append("a site is limited to a canary share")
    uneven = [c for c in snap.ownerships if not even(snap, topology, c)]
    if uneven:
        problems.append(f"placement not even for {', '.join(uneven)}")
    for site in topology.workers:
        report = snap.fresh_report(site)
        if report is not None:
            not_ready = sorted(c for c, r in report.components.items() if not r.ready)
            if not_ready:
                problems.append(f"site {site}: {', '.join(not_ready)} not ready")
    return problems


def even(snap: Snapshot, topology: Topology, component: str) -> bool:
    owners = [a.owner for a in snap.ownerships[component].shards]
    weights = {s: topology.weight(s) for s in topology.workers}
    return is_even(owners, list(topology.workers), weights)


def balanced(snap: Snapshot, topology: Topology) -> bool:
    """The rebalance step's "done": nothing drained, pinned or capped, no shard moving,
    every component even over the worker sites."""
    return (
        not snap.policy.drained_sites
        and not snap.policy.pinned
        and not snap.policy.canary
        and not snap.moving()
        and all(even(snap, topology, c) for c in snap.ownerships)
    )


def gate_samples(
    baseline: Mapping[str, ComponentHealth | None], report: ReportedVersions
) -> GateSamples:
    """The site's readings since ``baseline`` (the soak's start), over all its components."""
    handled = errors = 0
    counts: list[int] | None = None
    for c, now in report.components.items():
        if now.health is None:
            continue
        before = baseline.get(c)
        grown = now.health.minus(before) if before is not None else now.health
        handled += grown.handled
        errors += grown.errors
        counts = (
            list(grown.latency_counts)
            if counts is None
            else [a + b for a, b in zip(counts, grown.latency_counts, strict=True)]
        )
    total = handled + errors
    p99 = quantile_s(counts, 0.99) if counts is not None and total > 0 else None
    return GateSamples(
        messages=total,
        error_ratio=errors / total if total else 0.0,
        p99_s=p99 if p99 is None or p99 != float("inf") else 1e9,
        not_ready=tuple(sorted(c for c, r in report.components.items() if not r.ready)),
    )
