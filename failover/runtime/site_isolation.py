"""The leader marks a dead, fenced site's nodes out of service, and unmarks them when back.

``SiteIsolation.tick(controller)`` runs after the controller replica's tick (in the site
process) and does something only while that replica leads, at most every
``interval_s``: it reads the platform's node facts (``NodeIsolation.site_nodes``), the
controller's view of the sites and the ownership documents, and applies
``failover.core.isolation.isolation_step`` to each worker site. Each mark and unmark is a
log line (event ``site_isolated`` / ``site_released``) and, with an audit trail, an
audit record carrying the reason. A platform or store that cannot be asked is logged once
per outage and retried at the next interval; it never stops the controller.
"""

from __future__ import annotations

import logging

from failover.core.fencing import Ownership
from failover.core.isolation import IsolationFacts, IsolationStep, isolation_step
from failover.core.topology import Topology
from failover.ports import Clock, CoordinationStore, NodeIsolation, PlatformError, StoreError
from failover.runtime.audit_log import AuditError, AuditTrail
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import ownership_key

log = logging.getLogger("bfm.isolation")

INTERVAL_S = 1.0


class SiteIsolation:
    """Applies ``isolation_step`` for the leader (see the module docstring)."""

    def __init__(
        self,
        nodes: NodeIsolation,
        *,
        store: CoordinationStore,
        topology: Topology,
        clock: Clock,
        audit: AuditTrail | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.nodes, self.store, self.topology, self.clock = nodes, store, topology, clock
        self.audit, self.interval_s = audit, interval_s
        self.isolated: set[str] = set()  # as last seen
        self.problem = ""  # why the last pass could not look, while it cannot
        self._next_s = float("-inf")

    def tick(self, controller: ControllerRuntime) -> list[tuple[IsolationStep, str]]:
        """One pass if due and leading; what it did (step, site)."""
        now_s = self.clock.monotonic()
        if now_s < self._next_s or not controller.leading(now_s):
            return []
        self._next_s = now_s + self.interval_s
        try:
            done = self._pass(controller)
        except (PlatformError, StoreError) as err:
            if str(err) != self.problem:
                log.error(
                    f"cannot check the sites' nodes for isolation: {err}",
                    extra={"event": "isolation_failed"},
                )
            self.problem = str(err)
            return []
        self.problem = ""
        return done

    def _pass(self, controller: ControllerRuntime) -> list[tuple[IsolationStep, str]]:
        views = controller.views()
        done = []
        for seen in self.nodes.site_nodes():
            if not self.topology.is_worker(seen.site):
                continue
            view = views.get(seen.site)
            facts = IsolationFacts(
                site=seen.site,
                bfm_alive=None if view is None else view.alive,
                shards_held=self._shards_held(seen.site) if view and not view.alive else -1,
                nodes=seen.nodes,
                nodes_up=seen.up,
                nodes_isolated=seen.isolated,
            )
            step = isolation_step(facts)
            if step is None:
                continue
            changed = (
                self.nodes.isolate(seen.site)
                if step is IsolationStep.ISOLATE
                else self.nodes.release(seen.site)
            )
            self._tell(step, facts, changed)
            done.append((step, seen.site))
        return done

    def _shards_held(self, site: str) -> int:
        held = 0
        for component in self.topology.components:
            got = self.store.get(ownership_key(component))
            if got is None:
                continue
            try:
                held += Ownership.from_doc(got.value).counts((site,)).get(site, 0)
            except ValueError:
                return -1  # a damaged document proves nothing: do not isolate on it
        return held

    def _tell(self, step: IsolationStep, facts: IsolationFacts, nodes: list[str]) -> None:
        site = facts.site
        if step is IsolationStep.ISOLATE:
            self.isolated.add(site)
            what = f"site {site} isolated: out-of-service mark on nodes {', '.join(nodes)}"
            why = (
                f"BFM saw site {site} dead and its shards failed over; none of its "
                f"{facts.nodes} node(s) is up for the platform"
            )
        else:
            self.isolated.discard(site)
            what = f"site {site} released: out-of-service mark off nodes {', '.join(nodes)}"
            why = f"all {facts.nodes} node(s) of site {site} are up again for the platform"
        log.warning(
            f"{what} ({why})",
            extra={
                "event": f"site_{'isolated' if step is IsolationStep.ISOLATE else 'released'}",
                "site": site,
                "nodes": nodes,
            },
        )
        if self.audit is None:
            return
        try:
            self.audit.record(f"isolation.{step.value}", what, why=why)
        except AuditError as err:
            log.error(f"site isolation not audited: {err}", extra={"event": "audit_failed"})
