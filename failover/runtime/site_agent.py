"""A worker site's agent as it runs: lease renewals, ownership reads, probes, serving checks.

The decisions are ``failover.core.agent.SiteAgent``'s; this class does the store I/O and
keeps what was read. The caller drives it on its own schedule: ``renew`` every
``renew_interval_s``, ``poll`` every poll interval, and feeds it direct heartbeats from the
other workers (``heard_peer``). The same class runs in the real runtime and, with a
simulated store and clock, in ``bfm simulate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

from failover.core.agent import SiteAgent
from failover.core.detector import ComponentDetector, DetectorTiming, Health
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import Topology
from failover.ports import Clock, Conflict, CoordinationStore, OutcomeUnknown, StoreUnavailable
from failover.runtime.documents import (
    OWNERSHIP_PREFIX,
    lease_key,
    lease_parser,
    ownership_key,
    ownership_parser,
)
from failover.runtime.grants import Grants

Drained = tuple[tuple[str, int, int], ...]


class SiteAgentRuntime:
    """One worker site's agent: owns its lease document, reads every ownership document."""

    def __init__(
        self,
        site: str,
        *,
        store: CoordinationStore,
        clock: Clock,
        topology: Topology,
        timing: LeaseTiming,
        detector: DetectorTiming,
        probe: Callable[[str], bool],
        busy: Callable[[], Collection[tuple[str, int]]] = tuple,
        fencing_enabled: bool = True,
        exited: Callable[[str], bool] | None = None,
        publish_grants: Callable[[Grants], None] | None = None,
    ) -> None:
        """``probe(c)``: the component answered its last probe. ``exited(c)``: its process
        is gone for certain (down at once); without it every failed probe counts as that.
        ``publish_grants``: hands the grants to the local processes (the grants file); a
        renewal that gives grants up (a component reported down, a drain acknowledged)
        publishes them before its record is written, since the controller may move those
        shards as soon as it reads the record."""
        self.publish_grants = publish_grants
        self.site = site
        self.store, self.clock, self.topology = store, clock, topology
        self.probe, self.busy = probe, busy
        self.exited = exited or (lambda component: not probe(component))
        self.agent = SiteAgent(
            # Every other site, the witness too: a failsafe needs all of them to confirm they
            # cannot reach the store (whoever can may be the controller taking work over).
            site,
            timing=timing,
            peers=topology.site_names,
            fencing_enabled=fencing_enabled,
        )
        self.detectors = {c: ComponentDetector(detector) for c in topology.components}
        self.docs: dict[str, Ownership] = {}
        self.doc_revisions: dict[str, str] = {}
        self.reported: tuple[tuple[str, ...], Drained] = ((), ())
        self.damaged: dict[str, str] = {}  # component -> why its ownership could not be read
        self.max_epochs: dict[str, int] = {}  # the largest epoch seen, reported in the lease
        self._ownership = ownership_parser()
        self._lease = lease_parser()
        self._drained_key: object = None
        self._drained: Drained = ()

    def components_up(self) -> tuple[str, ...]:
        return tuple(c for c, d in self.detectors.items() if d.health is not Health.DOWN)

    def drained(self) -> Drained:
        """Drains this site acknowledges now (shards with work in flight wait)."""
        busy = frozenset(self.busy())
        key = (tuple(self.doc_revisions.values()), self.agent.session, busy)
        if key != self._drained_key:
            self._drained_key = key
            self._drained = tuple(sorted(self.agent.drained(self.docs.values(), busy=busy)))
        return self._drained

    def renew(self) -> bool:
        """One renewal of the site lease; False when it did not land."""
        started_s = self.clock.monotonic()
        key = lease_key(self.site)
        try:
            current = self.store.get(key)
            if current is not None:
                with contextlib.suppress(ValueError):  # a damaged lease is overwritten
                    self.agent.continue_from(self._lease(current))
            if self.agent.fenced:
                # A new session must exceed every one granted work, even if the stored
                # lease was damaged or deleted: the grants themselves say how far.
                self._read_ownership()
                granted = [
                    a.session for o in self.docs.values() for a in o.shards if a.owner == self.site
                ]
                self.agent.raise_session_floor(max(granted, default=0))
            record = self.agent.lease_record(
                wall_s=self.clock.wall(),
                components_up=self.components_up(),
                drained=self.drained(),
                epochs=self.max_epochs,
            )
            if self.publish_grants is not None and (
                (record.components_up, record.drained) != self.reported
            ):
                self.publish_grants(self.grants())  # withdrawn here before reported there
            if current is None:
                self.store.create(key, record.to_doc())
            else:
                self.store.compare_and_set(key, record.to_doc(), expected_revision=current.revision)
        except (StoreUnavailable, OutcomeUnknown):
            self.agent.store_failed()
            return False
        except Conflict:
            return False
        self.agent.renewed(record, started_at_s=started_s)
        self.reported = (record.components_up, record.drained)
        return True

    def poll(self) -> bool:
        """Probe components, read ownership, check the lease; True when the site just fenced.

        A change in what the lease reports (components up, drains) is written at once.
        """
        for c, detector in self.detectors.items():
            alive = self.probe(c)
            detector.probe(ok=alive, exited=not alive and self.exited(c))
        with contextlib.suppress(StoreUnavailable):  # renewals, not reads, tell store_ok
            self._read_ownership()
        fences = self.agent.fence_count
        self.agent.check(self.clock.monotonic())
        fenced = self.agent.fence_count > fences
        if (tuple(sorted(self.components_up())), self.drained()) != self.reported:
            self.renew()
        return fenced

    def _read_ownership(self) -> None:
        listed = {item.key: item for item in self.store.list(OWNERSHIP_PREFIX)}  # one request
        for c in self.topology.components:
            got = listed.get(ownership_key(c))
            if got is None:
                if c in self.doc_revisions:  # it existed: deleted under our feet
                    self.docs.pop(c, None)
                    self.doc_revisions.pop(c)
                    self.damaged[c] = f"ownership/{c} was deleted"
                continue
            if got.revision == self.doc_revisions.get(c):
                continue
            self.doc_revisions[c] = got.revision
            try:
                self.docs[c] = self._ownership(got)
            except ValueError as err:
                # Serve nothing of it: a grant we cannot read is no grant.
                self.docs.pop(c, None)
                self.damaged[c] = f"ownership/{c} revision {got.revision}: {err}"
            else:
                self.damaged.pop(c, None)
                self.max_epochs[c] = max(self.max_epochs.get(c, 0), self.docs[c].max_epoch)

    def heard_peer(self, peer: str, *, store_ok: bool, at_s: float | None = None) -> None:
        """A peer's direct report; ``at_s``: when the ping it answers was sent (monotonic)."""
        when = self.clock.monotonic() if at_s is None else at_s
        self.agent.heard_peer(peer, store_ok=store_ok, now_s=when)

    def serving(self, component: str, index: int) -> int | None:
        """The epoch under which this site accepts work for the shard now, or None."""
        doc = self.docs.get(component)
        if doc is None:
            return None
        a = doc.shards[index]
        ok = self.agent.may_serve(
            a,
            component=component,
            index=index,
            now_s=self.clock.monotonic(),
            component_up=self.detectors[component].health is not Health.DOWN,
        )
        return a.epoch if ok else None

    def serving_until(self, component: str, index: int) -> tuple[int, float] | None:
        """(epoch, deadline): the shard may be served under ``epoch`` until ``deadline``
        (monotonic, this host's clock), or None. Stamped on the work a router admits."""
        epoch = self.serving(component, index)
        if epoch is None:
            return None
        deadline_s = self.agent.serving_deadline_s(self.clock.monotonic())
        return None if deadline_s is None else (epoch, deadline_s)

    def grants(self) -> Grants:
        """Every shard this site may serve now, with the deadline of that right."""
        now = self.clock.monotonic()
        deadline_s = self.agent.serving_deadline_s(now)
        if deadline_s is None:
            return Grants(self.site, self.agent.session, float("-inf"), {})
        epochs = {
            (c, i): epoch
            for c in self.docs
            for i in range(self.topology.shards_per_component)
            if (epoch := self.serving(c, i)) is not None
        }
        return Grants(self.site, self.agent.session, deadline_s, epochs)

    def owner_of(self, component: str, index: int) -> str | None:
        """The owner this site knows of (for redirects)."""
        doc = self.docs.get(component)
        return doc.shards[index].owner if doc else None
