"""A worker site's agent as it runs: lease renewals, ownership reads, probes, serving checks.

The decisions are ``failover.core.agent.SiteAgent``'s; this class does the store I/O and
keeps what was read. The caller drives it on its own schedule: ``renew`` every
``renew_interval_s``, ``poll`` every poll interval, and feeds it direct heartbeats from the
other workers (``heard_peer``). The same class runs in the real runtime and, with a
simulated store and clock, in ``bfm simulate``.

A new ownership document that gives this site shards, takes them away or starts draining
them is applied inside the deciding trace: a ``bfm.apply_decision`` span (parent: the
decision's span, which the document names) and one INFO line (logger ``bfm.agent``, event
``apply_decision``) carrying its trace id; so is the renewal that reports drained shards
(span ``bfm.release``, event ``released``), which lets the transfer finish. Metrics
(component label ``agent``): lease renewal time, fenced, failsafe; and ``bfm_component_up``
per component of the site.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection

from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer

from bfm_observe.propagation import context_of
from failover import telemetry
from failover.core.agent import SiteAgent
from failover.core.detector import ComponentDetector, DetectorTiming, Health
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import Topology
from failover.ports import Clock, Conflict, CoordinationStore, OutcomeUnknown, StoreUnavailable
from failover.runtime.decision_trace import wall_ns
from failover.runtime.documents import (
    OWNERSHIP_PREFIX,
    lease_key,
    lease_parser,
    ownership_key,
    ownership_parser,
)
from failover.runtime.grants import Grants, decision_traceparent

Drained = tuple[tuple[str, int, int], ...]

COMPONENT_LABEL = "agent"
"""The ``component`` label of what a site agent exports about itself."""

log = logging.getLogger("bfm.agent")


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
        tracer: Tracer | None = None,
    ) -> None:
        """``probe(c)``: the component answered its last probe. ``exited(c)``: its process
        is gone for certain (down at once); without it every failed probe counts as that.
        ``publish_grants``: hands the grants to the local processes (the grants file); a
        renewal that gives grants up (a component reported down, a drain acknowledged)
        publishes them before its record is written, since the controller may move those
        shards as soon as it reads the record. ``tracer``: default
        ``failover.telemetry.tracer()`` (tests pass their own)."""
        self.publish_grants = publish_grants
        self.tracer = tracer or telemetry.tracer()
        labels = (site, COMPONENT_LABEL)
        self._renewal_seconds = telemetry.LEASE_RENEWAL_SECONDS.labels(*labels)
        self._fenced = telemetry.FENCED.labels(*labels)
        self._failsafe = telemetry.FAILSAFE_ACTIVE.labels(*labels)
        self._component_up = {
            c: telemetry.COMPONENT_UP.labels(site, c) for c in topology.components
        }
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
        try:
            return self._renew(started_s)
        finally:
            self._renewal_seconds.observe(max(self.clock.monotonic() - started_s, 0.0))
            self._fenced.set(float(self.agent.fenced))

    def _renew(self, started_s: float) -> bool:
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
        released = tuple(sorted(set(record.drained) - set(self.reported[1])))
        self.reported = (record.components_up, record.drained)
        if released:
            self._log_released(released)
        return True

    def _log_released(self, released: Drained) -> None:
        """The acknowledgement that lets a drain's transfer finish, in the drain's trace."""
        by_component: dict[str, list[int]] = {}
        for c, index, _ in released:
            by_component.setdefault(c, []).append(index)
        for c, shards in sorted(by_component.items()):
            doc = self.docs.get(c)
            parent = decision_traceparent(doc) if doc else ""
            span = self.tracer.start_span(
                "bfm.release",
                context=context_of(parent) if parent else Context(),
                attributes={"bfm.site": self.site, "bfm.component": c, "bfm.shards": shards},
            )
            ids = _ids(span, doc)
            span.end(end_time=wall_ns(self.clock.wall()))
            log.info(
                f"site {self.site} released {c} shards {shards} (drained) for their transfer",
                extra={
                    "event": "released",
                    "site": self.site,
                    "component": c,
                    "shards": shards,
                    "trace_id": ids[0],
                    "span_id": ids[1],
                },
            )

    def poll(self) -> bool:
        """Probe components, read ownership, check the lease; True when the site just fenced.

        A change in what the lease reports (components up, drains) is written at once.
        """
        for c, detector in self.detectors.items():
            alive = self.probe(c)
            detector.probe(ok=alive, exited=not alive and self.exited(c))
            self._component_up[c].set(float(detector.health is not Health.DOWN))
        with contextlib.suppress(StoreUnavailable):  # renewals, not reads, tell store_ok
            self._read_ownership()
        fences = self.agent.fence_count
        now_s = self.clock.monotonic()
        self.agent.check(now_s)
        fenced = self.agent.fence_count > fences
        self._fenced.set(float(self.agent.fenced))
        self._failsafe.set(float(not self.agent.fenced and self.agent.failsafe(now_s)))
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
            before = self.docs.get(c)
            try:
                self.docs[c] = self._ownership(got)
            except ValueError as err:
                # Serve nothing of it: a grant we cannot read is no grant.
                self.docs.pop(c, None)
                self.damaged[c] = f"ownership/{c} revision {got.revision}: {err}"
            else:
                self.damaged.pop(c, None)
                self.max_epochs[c] = max(self.max_epochs.get(c, 0), self.docs[c].max_epoch)
                self._applied(before, self.docs[c])

    def _applied(self, before: Ownership | None, after: Ownership) -> None:
        """A new ownership document that changes what this site serves: apply it inside
        the deciding trace (a ``bfm.apply_decision`` span and one log line carrying it)."""
        me, old = self.site, before.shards if before else ()
        gained, lost, draining = [], [], []
        for i, a in enumerate(after.shards):
            b = old[i] if i < len(old) else None
            was_mine = b is not None and b.owner == me
            if a.owner == me and a.session == self.agent.session:
                if not (was_mine and b is not None and b.epoch == a.epoch):
                    gained.append(i)
                elif a.draining and not (b is not None and b.draining):
                    draining.append(i)
            elif was_mine and a.owner != me:
                lost.append(i)
        if not (gained or lost or draining):
            return
        c, parent = after.component, decision_traceparent(after)
        span = self.tracer.start_span(
            "bfm.apply_decision",
            context=context_of(parent) if parent else Context(),
            attributes={
                "bfm.site": me,
                "bfm.component": c,
                "bfm.gained": gained,
                "bfm.lost": lost,
                "bfm.draining": draining,
                "bfm.max_epoch": after.max_epoch,
            },
            start_time=wall_ns(self.clock.wall()),
        )
        trace_id, span_id = _ids(span, after)
        span.end(end_time=wall_ns(self.clock.wall()))
        parts = [
            f"{what} {shards}"
            for what, shards in (("gains", gained), ("loses", lost), ("drains", draining))
            if shards
        ]
        log.info(
            f"site {me} applies {c} decision: {', '.join(parts)} (epoch {after.max_epoch})",
            extra={
                "event": "apply_decision",
                "site": me,
                "component": c,
                "gained": gained,
                "lost": lost,
                "draining": draining,
                "trace_id": trace_id,
                "span_id": span_id,
            },
        )

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
        decisions = {
            c: tp
            for c in sorted({c for c, _ in epochs})
            if (tp := decision_traceparent(self.docs[c]))
        }
        return Grants(self.site, self.agent.session, deadline_s, epochs, decisions)

    def owner_of(self, component: str, index: int) -> str | None:
        """The owner this site knows of (for redirects)."""
        doc = self.docs.get(component)
        return doc.shards[index].owner if doc else None


def _ids(span: Span, doc: Ownership | None) -> tuple[str, str]:
    """(trace id, span id) for a log line: the span's, else the deciding decision's."""
    ctx = span.get_span_context()
    if ctx.is_valid:
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
    return (doc.trace_id, doc.span_id) if doc else ("", "")
