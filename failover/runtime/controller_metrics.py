"""What a controller replica exports as metrics (``failover.telemetry``).

Every replica exports, with component label ``controller``, ``bfm_controller_is_leader``,
``bfm_leader_present`` and its leader lease renewal times. The leader alone exports its
view of the system (sites up, shards owned, epochs, failovers and hand-backs still to do),
and removes those gauges when it stops leading, so that only one replica ever exports the
view. What it decided and observed while leading (decision counts, phase, detection and
recovery times: counters and histograms) it keeps exporting after it steps down: that is
history, not a view, and removing it could lose a decision that Prometheus had not
scraped yet (a leader that steps down in the round that committed a failover, when a
slow round overran its renew deadline).

``LeaderMetrics`` is owned by a ``failover.runtime.controller.ControllerRuntime``, which
calls it with what it saw and decided; it reads no store and no clock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from failover import telemetry
from failover.core.controller import (
    Decision,
    DecisionKind,
    PlacementPolicy,
    SiteView,
    grant_valid,
    site_placeable,
    site_serves,
)
from failover.core.fencing import Ownership
from failover.core.placement import target_owners
from failover.core.topology import Topology

COMPONENT_LABEL = "controller"
"""The ``component`` label of what a controller replica exports about itself."""


class LeaderMetrics:
    """One controller replica's metrics: its role (always), and the leader-only series,
    remembered so that they can be removed when the replica stops leading."""

    def __init__(self, site: str) -> None:
        self.site = site
        # (site, component) -> when the component was seen to go down there (monotonic);
        # kept by every replica, so that a new leader can still tell the recovery time.
        self.down_since: dict[tuple[str, str], float] = {}
        self._series: set[tuple[Gauge, tuple[str, ...]]] = set()
        self._values: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        self._renewal_seconds = telemetry.LEASE_RENEWAL_SECONDS.labels(site, COMPONENT_LABEL)
        self._is_leader = telemetry.CONTROLLER_IS_LEADER.labels(site, COMPONENT_LABEL)
        self._leader_present = telemetry.LEADER_PRESENT.labels(site, COMPONENT_LABEL)

    # -- every replica --------------------------------------------------------------------

    def observe_renewal(self, seconds: float) -> None:
        """A write of the leader lease (renewal or take-over) took ``seconds``."""
        self._renewal_seconds.observe(seconds)

    def components_changed(self, site: str, changed: Mapping[str, bool], now_s: float) -> None:
        """Components went up (True) or down (False) at ``site``: when each went down."""
        for c, up in changed.items():
            if up:
                self.down_since.pop((site, c), None)
            else:
                self.down_since.setdefault((site, c), now_s)

    def export_roles(self, *, leading: bool, present: bool) -> None:
        """Whether this replica leads, and whether any does; one that does not lead
        exports no leader-only series."""
        if not leading:
            self.stop_leading()
        self._is_leader.set(float(leading))
        self._leader_present.set(float(present))

    def stop_leading(self) -> None:
        """Remove the view only a leader exports (its gauges; counters and histograms
        stay)."""
        for metric, labels in self._series:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        self._series.clear()
        self._values.clear()

    # -- the leader only ------------------------------------------------------------------

    def site_liveness(self, site: str, *, alive: bool, detected_after_s: float | None) -> None:
        """Whether ``site`` is alive; ``detected_after_s``: it was just seen to go down,
        its lease unchanged for this long."""
        self.set(telemetry.SITE_UP, 1.0 if alive else 0.0, site, COMPONENT_LABEL)
        if detected_after_s is not None:
            self.observe(telemetry.DETECTION_SECONDS, detected_after_s, site, COMPONENT_LABEL)

    def count_commit(self, decision: Decision, before: Ownership, now_s: float) -> None:
        """A committed decision; a failover also ends the outage of the sites it moves
        shards away from (their recovery time)."""
        c = decision.component
        self.inc(telemetry.FAILOVERS, self.site, c, decision.kind.value)
        if decision.kind is not DecisionKind.FAILOVER:
            return
        for site in sorted({str(before.shards[i].owner) for i in decision.shards}):
            since_s = self.down_since.pop((site, c), None)
            if since_s is not None:
                self.observe(telemetry.RECOVERY_SECONDS, now_s - since_s, site, c)

    def observe_phases(self, phases: Mapping[str, tuple[float, float]]) -> None:
        """How long each phase of a decision took (its wall-clock start and end)."""
        for phase, (start_s, end_s) in phases.items():
            self.observe(
                telemetry.DECISION_PHASE_SECONDS,
                max(end_s - start_s, 0.0),
                self.site,
                COMPONENT_LABEL,
                phase,
            )

    def export_state(
        self,
        topology: Topology,
        current: Mapping[str, Ownership],
        views: Mapping[str, SiteView],
        policy: PlacementPolicy,
    ) -> None:
        """The leader's view of the system: shards owned, epochs, failovers and hand-backs
        still to do (``failover.telemetry``)."""
        workers = topology.workers
        weights = {s: topology.weight(s) for s in workers}
        for c, ownership in current.items():
            counts = ownership.counts(workers)
            self.set(
                telemetry.EPOCH_MAX,
                max((a.epoch for a in ownership.shards), default=0),
                self.site,
                c,
            )
            live = [
                s
                for s in workers
                if (v := views.get(s)) is not None
                and site_serves(v, c)
                and site_placeable(v, c, policy)
            ]
            owners = [a.owner for a in ownership.shards]
            target = target_owners(owners, live, weights, caps=policy.caps) if live else owners
            for s in workers:
                self.set(telemetry.SHARDS_OWNED, counts.get(s, 0), s, c)
                orphaned = any(
                    a.owner == s and not grant_valid(a, views, c) for a in ownership.shards
                )
                self.set(telemetry.FAILOVER_IN_PROGRESS, float(orphaned), s, c)
                pending = sum(
                    1
                    for o, t in zip(owners, target, strict=True)
                    if t == s and o not in (None, s) and (v := views.get(str(o))) and v.alive
                )
                self.set(telemetry.HANDBACK_PENDING, pending, s, c)

    def set(self, gauge: Gauge, value: float, *labels: str) -> None:
        """Set a leader-only gauge (only when its value changed)."""
        key = (gauge, labels)
        if self._values.get(key) != value:  # most rounds change nothing
            gauge.labels(*labels).set(value)
            self._values[key] = value
            self._series.add(key)

    def inc(self, counter: Counter, *labels: str) -> None:
        """Count something decided while leading (kept after stepping down)."""
        counter.labels(*labels).inc()

    def observe(self, histogram: Histogram, value: float, *labels: str) -> None:
        """Observe something timed while leading (kept after stepping down)."""
        histogram.labels(*labels).observe(value)
