"""A site's controller as it runs: leader election, watching the sites, writing decisions.

Every site runs one; the one holding the leader lease decides. Decisions are
``failover.core.controller.decide``'s; this class does the store I/O. ``tick`` is called
every controller interval by the caller (the runtime loop, or ``bfm simulate``).

Each decision round also reads the operator's ``admin/policy`` (``failover.runtime.admin``)
and applies it: drained sites are views with ``admin_drained``; pins and canary limits
(``caps``) are merged over the configured ``PlacementPolicy``. Every committed decision is
appended to the decision history (``events/``) and, given an ``audit_log``, to the audit
trail (``failover.runtime.audit_log``); a failed append never holds up the decisions.

Every decision is one trace (``failover.runtime.decision_trace``: ``self.trace``, which
also keeps what the controller saw in the site leases for the decision it leads to).
Metrics (``failover.runtime.controller_metrics``: ``self.metrics``): every replica
exports its role; the leader exports its view of the system and of its decisions, and
removes those series when it stops leading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from opentelemetry.trace import Span, Tracer

from failover import telemetry
from failover.core.agent import LeaseRecord
from failover.core.audit import AuditEntry
from failover.core.controller import Decision, PlacementPolicy, SiteView, decide_component
from failover.core.detector import DetectorTiming, Stability
from failover.core.fencing import Ownership, unowned
from failover.core.quorum import LeaseObserver, LeaseTiming
from failover.core.topology import Topology
from failover.ports import (
    Clock,
    Conflict,
    CoordinationStore,
    OutcomeUnknown,
    StoreError,
    StoreUnavailable,
)
from failover.runtime.admin import effective_policy
from failover.runtime.audit_log import AuditError, AuditTrail
from failover.runtime.controller_metrics import LeaderMetrics
from failover.runtime.decision_trace import DecisionTracer
from failover.runtime.documents import (
    ADMIN_POLICY_KEY,
    LEADER_KEY,
    OWNERSHIP_PREFIX,
    AdminPolicy,
    LeaderRecord,
    Parsed,
    admin_parser,
    lease_key,
    lease_parser,
    ownership_key,
    ownership_parser,
)
from failover.runtime.events import DEFAULT_KEEP_EVENTS, EventLog, decision_event

OnCommit = Callable[[Decision, Ownership], None]

FOLLOWER_OBSERVE_INTERVAL_S = 0.5
"""How often a replica that does not lead reads the site leases (the leader: every tick)."""

AUDIT_ANCHOR_RETRY_AFTER_S = 5.0
"""After the store failed an audit anchor, the leader leaves the head alone this long (the
records still go to the file): an unreachable store costs at most one failed request per
this interval, never one per decision."""

log = logging.getLogger("bfm.controller")


class ControllerRuntime:
    """One site's controller replica."""

    def __init__(
        self,
        site: str,
        *,
        store: CoordinationStore,
        clock: Clock,
        topology: Topology,
        timing: LeaseTiming,
        detector: DetectorTiming,
        policy: PlacementPolicy,
        trace_id: Callable[[], str] | None = None,
        on_commit: OnCommit | None = None,
        keep_events: int = DEFAULT_KEEP_EVENTS,
        acquire_after_s: float = 0.0,
        tracer: Tracer | None = None,
        audit_log: Path | None = None,
    ) -> None:
        """``acquire_after_s``: for this long after start, do not take a free or expired
        leader lease (only the preferred replica, the witness's, starts at 0: it has no
        workload to share its process with, and a leader crash there moves no work).

        ``trace_id``: where the trace ids written into ownership documents come from
        (the simulation passes its own, deterministic ones); by default each decision's
        ``bfm.decision`` span's, or a random one while telemetry is not configured.
        ``tracer``: default ``failover.telemetry.tracer()`` (tests pass their own).
        ``audit_log``: the audit log every committed decision is appended to, as
        ``controller@<site>`` (None: not audited)."""
        self.site = site
        self.store, self.clock, self.topology = store, clock, topology
        self.timing, self.policy = timing, policy
        self.trace_id, self.on_commit = trace_id, on_commit
        self.tracer = tracer or telemetry.tracer()
        lease_s = timing.lease_duration_s
        self.leader_observer = LeaseObserver(lease_duration_s=lease_s)
        self.observers = {w: LeaseObserver(lease_duration_s=lease_s) for w in topology.workers}
        self.records: dict[str, LeaseRecord | None] = {}
        self.stability = {
            (w, c): Stability(detector) for w in topology.workers for c in topology.components
        }
        self.renewed_at_s: float | None = None
        self.leader_revision: str | None = None
        self.last_inputs: object = None
        self.last_ups: dict[str, frozenset[str]] = {}
        self.views_at_s: float | None = None  # when observe_sites last read the leases
        self.ever_up: set[tuple[str, str]] = set()
        self.max_epochs: dict[str, int] = {}  # the largest epoch seen per component
        self.damaged: dict[str, str] = {}  # component -> why its ownership could not be read
        self.term = 0  # the leader term of this controller's latest lease write
        self.admin = AdminPolicy()  # the operator's last good desired state
        self.admin_damaged = ""  # why admin/policy could not be read, while it cannot
        self.admin_ignored: list[str] = []  # entries of admin/policy naming no worker/component
        self.events = EventLog(store, keep=keep_events)
        self.events_error = ""  # why the last history append failed, if it did
        self._events_term = 0
        self._leader: Parsed[LeaderRecord] = Parsed(LeaderRecord.from_doc)
        self._lease = lease_parser()
        self._ownership = ownership_parser()
        self._admin = admin_parser()
        self.acquire_after_s = acquire_after_s
        self._started_s = clock.monotonic()
        self._observed_at_s = float("-inf")
        # Whether the last round reached the store (the witness's heartbeats say it). True
        # until a round fails: "I cannot reach it either" is what allows others a failsafe.
        self.store_ok = True
        self._leader_holder: str | None = None  # of the leader lease ("": damaged)
        keep_s = detector.max_holdoff_s + lease_s  # how long an observation may explain
        self.trace = DecisionTracer(
            site, clock=clock, tracer=self.tracer, keep_s=keep_s, components=topology.components
        )
        self.metrics = LeaderMetrics(site)
        self.audit = (
            AuditTrail(
                audit_log,
                store,
                who=f"controller@{site}",
                clock=clock,
                anchor_retry_after_s=AUDIT_ANCHOR_RETRY_AFTER_S,
            )
            if audit_log is not None
            else None
        )
        self.audit_error = ""  # why the last audit append failed, if it did

    def leading(self, now_s: float) -> bool:
        return (
            self.renewed_at_s is not None
            and now_s - self.renewed_at_s <= self.timing.renew_deadline_s
        )

    def tick(self) -> None:
        try:
            self._tick()
        finally:
            self._export_roles()

    def _tick(self) -> None:
        try:
            self.elect()
            now = self.clock.monotonic()
            leading = self.leading(now)
            # A follower keeps watching the sites (a leader it replaces needs their history)
            # but more slowly: seeing a lease change later only makes it wait longer.
            if leading or now - self._observed_at_s >= FOLLOWER_OBSERVE_INTERVAL_S:
                self._observed_at_s = now
                self.observe_sites()
            if leading:
                self.decide()
                if self.audit is not None:
                    self.audit.anchor_pending()  # records written while the store was away
            self.store_ok = True
        except (StoreUnavailable, OutcomeUnknown):
            self.store_ok = False
            self.leader_observer.read_failed()
            for observer in self.observers.values():
                observer.read_failed()

    def elect(self) -> None:
        now = self.clock.monotonic()
        got = self.store.get(LEADER_KEY)
        try:
            record = self._leader(got) if got else None
            self.leader_observer.observe(record, now)
            self._leader_holder = record.holder if record else None
        except ValueError:
            # A damaged leader lease: the leader repairs it at once (by CAS, so exclusively);
            # anyone else takes it over once it has not changed for a lease duration.
            record = None
            self._leader_holder = ""
            self.leader_observer.observe(("damaged", got.revision if got else ""), now)
            if not (self.leading(now) or self.leader_observer.expired(now)):
                return
        if not self.leading(now):
            self.renewed_at_s = None
        mine = record is not None and record.holder == self.site
        if (
            record is not None
            and mine
            and (
                self.renewed_at_s is not None
                or (got is not None and got.revision == self.leader_revision)
            )
        ):
            # Still ours: renewing in time, or unchanged since our last write (we only lost
            # the store for a while): nobody else took it, so the CAS keeps it exclusive.
            new = LeaderRecord(self.site, record.term, record.renew_count + 1)
        elif record is None or self.leader_observer.expired(now):  # free, expired or damaged
            if now - self._started_s < self.acquire_after_s:
                return  # leave it to the preferred replica for a while
            new = LeaderRecord(self.site, (record.term if record else 0) + 1, 0)
        else:
            return
        try:
            if got is None:
                self.leader_revision = self.store.create(LEADER_KEY, new.to_doc())
            else:
                self.leader_revision = self.store.compare_and_set(
                    LEADER_KEY, new.to_doc(), expected_revision=got.revision
                )
        except Conflict:
            self.renewed_at_s = None
            return
        finally:
            self.metrics.observe_renewal(max(self.clock.monotonic() - now, 0.0))
        self.renewed_at_s, self.term = now, new.term

    def observe_sites(self) -> None:
        now = self.clock.monotonic()
        self.views_at_s = now  # views() judge by this moment: what was read, and noted
        leading = self.leading(now)
        for w, observer in self.observers.items():
            got = self.store.get(lease_key(w))
            summary: object
            try:
                record = self._lease(got) if got else None
                summary = record.summary() if record else None
            except ValueError:
                record, summary = None, ("damaged", got.revision if got else "")
            if record is not None:
                self.trace.note_lease_change(w, self.records.get(w), record, now)
                self.records[w] = record
            # A damaged or deleted lease proves nothing about its site: judge it by the last
            # good record until no change has been seen for a lease duration.
            observer.observe(summary, now)
            record = self.records.get(w)
            alive = record is not None and not observer.expired(now)
            detected_after_s = self.trace.note_liveness(w, alive, observer, now)
            if leading:
                self.metrics.site_liveness(w, alive=alive, detected_after_s=detected_after_s)
            ups = frozenset(record.components_up) if alive and record is not None else frozenset()
            if ups == self.last_ups.get(w):
                continue
            changed = self.trace.note_ups(w, self.last_ups.get(w, frozenset()), ups, now)
            self.metrics.components_changed(w, changed, now)
            self.last_ups[w] = ups
            # A site on its first session that has not brought a component up yet is
            # starting, not failed; after a crash its session is higher and it waits.
            starting = record is None or record.session <= 1
            for c in self.topology.components:
                up = c in ups
                if up:
                    self.ever_up.add((w, c))
                elif starting and (w, c) not in self.ever_up:
                    continue
                self.stability[(w, c)].update(up=up, now_s=now)

    def _epoch_floor(self, component: str) -> int:
        """The largest epoch known for a component whose document is missing.

        Normally 0 (never placed). If the document was deleted, new grants must still be
        larger than every earlier one: this controller's memory and the epochs the sites
        report in their leases say how large.
        """
        reported = (r.max_epochs.get(component, 0) for r in self.records.values() if r)
        return max(self.max_epochs.get(component, 0), *reported, 0)

    def views(self, drained: frozenset[str] = frozenset()) -> dict[str, SiteView]:
        """What is known of each worker site; ``drained``: sites the operator drained.

        Judged at the moment of the last ``observe_sites``, not later: a site whose lease
        expires between the observation and a decision is judged dead at the next round,
        after the observation has noted it (its outage start, its decision trace), so the
        failover that follows is timed and explained from that observation."""
        now = self.clock.monotonic() if self.views_at_s is None else self.views_at_s
        views = {}
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
                admin_drained=w in drained,
                released=frozenset(record.released),
            )
        return views

    def read_admin(self) -> str | None:
        """Read ``admin/policy`` into ``self.admin``; its revision (None: not written).

        A damaged document changes nothing: the last good one stays in force (an operator
        repairs it with the next ``bfm drain``/``undrain``/...), and ``admin_damaged`` says
        why. A deleted one means the operator's default: nothing drained, nothing pinned.
        """
        got = self.store.get(ADMIN_POLICY_KEY)
        if got is None:
            self.admin, self.admin_damaged = AdminPolicy(), ""
            return None
        try:
            self.admin = self._admin(got)
        except ValueError as err:
            self.admin_damaged = f"admin/policy revision {got.revision}: {err}"
        else:
            self.admin_damaged = ""
        return got.revision

    def decide(self) -> list[Decision]:
        """Read the ownership documents, decide, and write every decision by CAS."""
        current: dict[str, Ownership] = {}
        revisions: dict[str, str | None] = {}
        listed = {item.key: item for item in self.store.list(OWNERSHIP_PREFIX)}  # one request
        for c in self.topology.components:
            got = listed.get(ownership_key(c))
            if got is None:
                floor = self._epoch_floor(c)
                fresh = unowned(c, self.topology.shards_per_component)
                current[c], revisions[c] = replace(fresh, max_epoch=floor), None
                continue
            try:
                current[c], revisions[c] = self._ownership(got), got.revision
                self.max_epochs[c] = max(self.max_epochs.get(c, 0), current[c].max_epoch)
            except ValueError as err:
                # Never overwrite it: its epochs are unknown, and a new grant could reuse
                # one. An operator must repair it; every other component goes on.
                self.damaged[c] = f"ownership/{c} revision {got.revision}: {err}"
            else:
                self.damaged.pop(c, None)
        self.read_admin()
        drained, policy, self.admin_ignored = effective_policy(
            self.admin, self.topology, self.policy
        )
        views = self.views(drained)
        choices = (
            drained,
            tuple(sorted(policy.pinned.items())),
            tuple(sorted(policy.caps.items())),
        )
        inputs = (tuple(revisions.values()), tuple(views.values()), choices)
        if inputs == self.last_inputs:
            return []  # nothing new since the last round, which decided nothing (no span)
        decide_started_s = self.clock.wall()
        decisions = [
            d
            for c in current  # components whose ownership could be read
            if (d := decide_component(self.topology, current[c], views, policy))
        ]
        decide_ended_s = self.clock.wall()
        self.last_inputs = None if decisions else inputs
        committed: list[Decision] = []
        if decisions:
            trace_id = self.trace_id() if self.trace_id is not None else None
            for parent, group in self.trace.groups(decisions, current).items():
                done, phases = self.trace.trace_decisions(
                    group,
                    current,
                    parent=parent,
                    trace_id=trace_id,
                    term=self.term,
                    decide_s=(decide_started_s, decide_ended_s),
                    write=lambda ds, fence: self._write(ds, revisions, fence),
                    record=lambda ds: self._commit(ds, current),
                )
                self.metrics.observe_phases(phases)
                committed += done
            for d in committed:
                current[d.component] = d.ownership
        self.metrics.export_state(self.topology, current, views, policy)
        return committed

    def _write(
        self, decisions: Sequence[Decision], revisions: Mapping[str, str | None], fence: Span
    ) -> list[Decision]:
        """CAS each new ownership document: its new epochs are the fencing tokens."""
        committed = []
        for d in decisions:
            key, revision = ownership_key(d.component), revisions[d.component]
            try:
                if revision is None:
                    self.store.create(key, d.ownership.to_doc())
                else:
                    self.store.compare_and_set(
                        key, d.ownership.to_doc(), expected_revision=revision
                    )
            except Conflict:
                fence.add_event("conflict: not written", attributes={"bfm.component": d.component})
                continue
            fence.set_attribute(f"bfm.max_epoch.{d.component}", d.ownership.max_epoch)
            committed.append(d)
        fence.set_attribute("bfm.committed", [d.component for d in committed])
        return committed

    def _commit(self, committed: Sequence[Decision], before: Mapping[str, Ownership]) -> str:
        """Tell ``on_commit``, the history and the metrics of the committed decisions; why
        the history could not be appended to ("" if it could)."""
        for d in committed:
            if self.on_commit is not None:
                self.on_commit(d, before[d.component])
            self._record(d, before[d.component])
            self.metrics.count_commit(d, before[d.component], self.clock.monotonic())
        self._audit(committed, before)
        return self.events_error

    def _audit(self, committed: Sequence[Decision], before: Mapping[str, Ownership]) -> None:
        """Append the committed decisions to the audit log, one record each, in one go; a
        failure is logged and kept in ``audit_error``, never raised (decisions go on)."""
        if self.audit is None or not committed:
            return
        entries = [
            AuditEntry(
                who=self.audit.who,
                action=f"decision.{d.kind.value}",
                what=f"{d.kind.value} {d.component} shards {list(d.shards)}: epoch "
                f"{d.ownership.max_epoch}, leader term {self.term}",
                why=d.reason + self._admin_note(),
                before=before[d.component].to_doc(),
                after=d.ownership.to_doc(),
                trace_id=d.ownership.trace_id,
            )
            for d in committed
        ]
        try:
            self.audit.append(entries)
        except AuditError as err:
            self.audit_error = str(err)
            log.error(f"decisions not audited: {err}", extra={"event": "audit_failed"})
        else:
            self.audit_error = ""

    def _export_roles(self) -> None:
        now = self.clock.monotonic()
        leading = self.leading(now)
        if not leading:
            self.last_inputs = None  # decide afresh when leading again
        present = leading or (bool(self._leader_holder) and not self.leader_observer.expired(now))
        self.metrics.export_roles(leading=leading, present=present)

    def _admin_note(self) -> str:
        """The operator's choices in force, for the history's reasons ("" when none)."""
        parts = [f"{s} drained" for s in self.admin.drained_sites]
        parts += [f"{s} canary at {n}" for s, n in sorted(self.admin.canary.items())]
        parts += [f"{c} pinned to {s}" for c, s in sorted(self.admin.pinned.items())]
        return f" (operator: {', '.join(parts)})" if parts else ""

    def _record(self, decision: Decision, before: Ownership) -> None:
        """Append the decision to the history; a store error here is noted, never raised."""
        if self._events_term != self.term:
            self.events.forget()  # others may have written while we did not lead
            self._events_term = self.term
        event = decision_event(
            at_wall_s=self.clock.wall(),
            leader=self.site,
            term=self.term,
            component=decision.component,
            kind=decision.kind.value,
            shards=decision.shards,
            reason=decision.reason + self._admin_note(),
            before=before,
            after=decision.ownership,
        )
        try:
            self.events.append(event)
        except StoreError as err:
            self.events_error = f"{type(err).__name__}: {err}"
        else:
            self.events_error = ""
