"""The trace of each controller decision, and the observations it starts from.

Every decision is one trace (ARCHITECTURE.md section 5): a root span ``bfm.decision``
(always sampled: ``bfm.always_sample``) with children ``bfm.detect`` (from the first
observation that led to it, e.g. the failed site's last renewal seen, to the decision;
one event per observation), ``bfm.decide``, ``bfm.fence`` (the CAS writes: the new
epochs are the fencing tokens) and ``bfm.record`` (the history). The new ownership
documents carry its trace and span ids, so the agents apply it inside the same trace; a
transfer or cancellation that finishes an earlier drain continues the drain's trace (one
switchover is one trace), and every decision links to the previous decision of each
component it changes. A round whose inputs did not change decides nothing and makes no
span; one whose inputs changed but that decides nothing makes none either (its spans are
written after ``decide_component`` answered, with the times measured meanwhile).

``DecisionTracer`` is owned by a ``failover.runtime.controller.ControllerRuntime``: the
runtime tells it what it sees in the site leases (``note_*``) and hands it each group of
decisions with the store I/O to do (``trace_decisions``); it does no I/O of its own.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, Tracer

from bfm_observe.propagation import context_of, link_to
from failover.core.agent import LeaseRecord
from failover.core.controller import Decision, DecisionKind
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseObserver
from failover.ports import Clock
from failover.runtime.grants import decision_traceparent

OBSERVATIONS_KEPT = 8
"""Observations kept per (site, component) for the next decision's ``bfm.detect`` span."""

Phases = dict[str, tuple[float, float]]
"""Wall-clock (start, end) of each phase of a decision: detect, decide, fence, record."""

Write = Callable[[Sequence[Decision], Span], list[Decision]]
"""The fence phase: write the decisions by CAS (events on the span); the committed ones."""

Record = Callable[[Sequence[Decision]], str]
"""The record phase: act on the committed decisions; why the history failed ("" if not)."""


@dataclass(frozen=True)
class Observation:
    """A change the controller saw in a site's lease, kept for the decision it triggers."""

    mono_s: float
    wall_s: float
    site: str
    component: str  # "" for the site as a whole
    what: str


class DecisionTracer:
    """One controller replica's decision traces: the observations kept for the next
    decision's ``bfm.detect`` span, and the spans of each decision."""

    def __init__(
        self,
        site: str,
        *,
        clock: Clock,
        tracer: Tracer,
        keep_s: float,
        components: Sequence[str],
    ) -> None:
        """``keep_s``: how long an observation may still explain a decision (the longest
        hold-off and a lease duration); ``components``: the topology's."""
        self.site = site
        self.clock, self.tracer = clock, tracer
        self.keep_s, self.components = keep_s, components
        self.observed: dict[tuple[str, str], deque[Observation]] = {}
        # site-level observations -> the components whose decisions have told them
        self._told: dict[Observation, set[str]] = {}
        self._alive: dict[str, bool] = {}

    # -- what the next decision's bfm.detect span tells -----------------------------------

    def observe(self, site: str, component: str, what: str, *, at_s: float) -> None:
        """Keep an observation made at monotonic time ``at_s``."""
        wall_s = self.clock.wall() - (self.clock.monotonic() - at_s)
        kept = self.observed.setdefault((site, component), deque(maxlen=OBSERVATIONS_KEPT))
        kept.append(Observation(at_s, wall_s, site, component, what))

    def take_observations(self, components: Iterable[str]) -> list[Observation]:
        """The observations that led to a decision about ``components``: theirs, and the
        sites' that no earlier decision about all of these components told (a site's
        going down explains the failover of each of its components, in whichever round
        each one is decided). Older than the longest hold-off and a lease duration, an
        observation explains nothing any more."""
        wanted = set(components)
        oldest_s = self.clock.monotonic() - self.keep_s
        taken = []
        for (_, c), kept in self.observed.items():
            for o in kept:
                if o.mono_s < oldest_s or (c and c not in wanted):
                    continue
                if not c:
                    told = self._told.setdefault(o, set())
                    if wanted <= told:
                        continue
                    told |= wanted
                taken.append(o)
        for c in wanted:
            self.forget_observations(component=c)
        self._told = {o: told for o, told in self._told.items() if o.mono_s >= oldest_s}
        return sorted(taken, key=lambda o: o.mono_s)

    def forget_observations(self, *, component: str) -> None:
        """Drop the observations of ``component`` ("": of the sites as a whole)."""
        for key in [k for k in self.observed if k[1] == component]:
            del self.observed[key]

    def note_lease_change(
        self, site: str, before: LeaseRecord | None, after: LeaseRecord, now_s: float
    ) -> None:
        """A new lease record of ``site``: its new session, drains and releases."""
        if before is not None and after.session != before.session:
            self.observe(site, "", f"site {site} started session {after.session}", at_s=now_s)
        drained_before = set(before.drained) if before else set()
        for c, index, _ in sorted(set(after.drained) - drained_before):
            self.observe(site, c, f"site {site} drained {c} shard {index}", at_s=now_s)
        released_before = set(before.released) if before else set()
        for c, epoch in sorted(set(after.released) - released_before):
            self.observe(site, c, f"site {site} released {c} up to epoch {epoch}", at_s=now_s)

    def note_liveness(
        self, site: str, alive: bool, observer: LeaseObserver, now_s: float
    ) -> float | None:
        """Whether ``site`` is alive now; when it was just seen to go down, how long its
        lease had been unchanged (the detection time), else None."""
        was = self._alive.get(site)
        self._alive[site] = alive
        if was and not alive:
            silent_s = observer.age_s(now_s) or 0.0
            self.observe(site, "", f"site {site}: last lease renewal seen", at_s=now_s - silent_s)
            self.observe(
                site, "", f"site {site} down: lease unchanged for {silent_s:.2f} s", at_s=now_s
            )
            return silent_s
        if alive and was is False:
            self.observe(site, "", f"site {site} up: lease renewed again", at_s=now_s)
        return None

    def note_ups(
        self, site: str, before: frozenset[str], after: frozenset[str], now_s: float
    ) -> dict[str, bool]:
        """The components up at ``site`` changed: which did, and whether each is up now."""
        changed = {}
        for c in self.components:
            if (c in before) == (c in after):
                continue
            up = c in after
            self.observe(site, c, f"{c} {'up' if up else 'down'} at site {site}", at_s=now_s)
            changed[c] = up
        return changed

    # -- the decision's spans -------------------------------------------------------------

    def groups(
        self, decisions: Sequence[Decision], current: Mapping[str, Ownership]
    ) -> dict[str, list[Decision]]:
        """The decisions by trace: one new trace per decision ("" key), except that
        finishing an earlier decision's drain continues the earlier trace (one switchover:
        drain, release, grant, one trace), keyed by its traceparent."""
        groups: dict[str, list[Decision]] = {}
        for d in decisions:
            groups.setdefault(_continues(d, current[d.component]), []).append(d)
        return groups

    def trace_decisions(
        self,
        decisions: Sequence[Decision],
        current: Mapping[str, Ownership],
        *,
        parent: str,
        trace_id: str | None,
        term: int,
        decide_s: tuple[float, float],
        write: Write,
        record: Record,
    ) -> tuple[list[Decision], Phases]:
        """Write one group of decisions inside their ``bfm.decision`` span: detect, decide,
        fence (``write``), record (``record``); the committed decisions and the phases.

        ``parent``: the traceparent this group continues ("": a new trace); ``trace_id``:
        the caller's id for the ownership documents (None: the span's own ids);
        ``decide_s``: when ``decide_component`` was called and answered (wall clock)."""
        components = [d.component for d in decisions]
        observed = self.take_observations(components)
        detect_from_s = min([o.wall_s for o in observed] + [decide_s[0]])
        links = [
            link
            for d in decisions
            if (tp := decision_traceparent(current[d.component]))
            and tp != parent
            and (
                link := link_to(
                    tp, **{"bfm.link": "previous-decision", "bfm.component": d.component}
                )
            )
            is not None
        ]
        decision = self.tracer.start_span(
            "bfm.decision",
            context=context_of(parent) if parent else Context(),
            attributes={
                "bfm.always_sample": True,
                "bfm.leader_site": self.site,
                "bfm.term": term,
            },
            links=_unique_links(links),
            start_time=wall_ns(detect_from_s),
        )
        ctx = decision.get_span_context()
        if trace_id is not None:
            ids = (trace_id, "")  # the caller's ids (the simulation's, deterministic)
        elif ctx.is_valid:
            ids = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        else:  # telemetry off: documents still carry an id, which logs can be searched for
            ids = (secrets.token_hex(16), secrets.token_hex(8))
        decision.set_attributes(
            {
                "bfm.components": components,
                "bfm.kinds": [d.kind.value for d in decisions],
                "bfm.decisions": [
                    f"{d.kind.value} {d.component} {list(d.shards)}" for d in decisions
                ],
                "bfm.continues_trace": bool(parent),
            }
        )
        try:
            return self._phases(
                decisions, list(current), decision, ids, observed, decide_s, write, record
            )
        except BaseException as err:
            decision.record_exception(err)
            decision.set_status(trace.StatusCode.ERROR, f"{type(err).__name__}: {err}")
            raise
        finally:
            decision.end(end_time=wall_ns(self.clock.wall()))

    def _phases(
        self,
        decisions: Sequence[Decision],
        considered: Sequence[str],
        decision: Span,
        ids: tuple[str, str],
        observed: Sequence[Observation],
        decide_s: tuple[float, float],
        write: Write,
        record: Record,
    ) -> tuple[list[Decision], Phases]:
        in_decision = trace.set_span_in_context(decision)
        detect_from_s = min([o.wall_s for o in observed] + [decide_s[0]])
        detect = self._span("bfm.detect", in_decision, detect_from_s)
        detect.set_attribute("bfm.observations", len(observed))
        for o in observed:
            detect.add_event(
                o.what,
                attributes={"bfm.site": o.site, "bfm.component": o.component or "*"},
                timestamp=wall_ns(o.wall_s),
            )
        detect.end(end_time=wall_ns(decide_s[0]))
        decide = self._span("bfm.decide", in_decision, decide_s[0])
        decide.set_attribute("bfm.components_considered", considered)
        for d in decisions:
            decide.add_event(
                f"{d.kind.value} {d.component}",
                attributes={"bfm.shards": list(d.shards), "bfm.reason": d.reason},
                timestamp=wall_ns(decide_s[0]),
            )
        decide.end(end_time=wall_ns(decide_s[1]))
        decisions = [
            replace(d, ownership=replace(d.ownership, trace_id=ids[0], span_id=ids[1]))
            for d in decisions
        ]
        fence_from_s = self.clock.wall()
        fence = self._span("bfm.fence", in_decision, fence_from_s)
        try:
            committed = write(decisions, fence)
        finally:
            fence_to_s = self.clock.wall()
            fence.end(end_time=wall_ns(fence_to_s))
        recording = self._span("bfm.record", in_decision, fence_to_s)
        try:
            with trace.use_span(recording, end_on_exit=False):  # logs of on_commit carry it
                error = record(committed)
            if error:
                recording.set_attribute("bfm.error", error)
        finally:
            done_s = self.clock.wall()
            recording.end(end_time=wall_ns(done_s))
        decision.set_attribute("bfm.committed", [d.component for d in committed])
        phases = {
            "detect": (detect_from_s, decide_s[0]),
            "decide": decide_s,
            "fence": (fence_from_s, fence_to_s),
            "record": (fence_to_s, done_s),
        }
        return committed, phases

    def _span(self, name: str, parent: Context, start_s: float) -> Span:
        """A child span of the decision; the caller ends it (with its own end time)."""
        return self.tracer.start_span(name, context=parent, start_time=wall_ns(start_s))


def _continues(decision: Decision, before: Ownership) -> str:
    """The traceparent of the earlier decision this one finishes ("" if none): a
    transfer or cancellation of shards the current document has draining."""
    if decision.kind not in (DecisionKind.TRANSFER, DecisionKind.CANCEL_DRAIN):
        return ""
    if not any(before.shards[i].draining for i in decision.shards):
        return ""
    return decision_traceparent(before)


def _unique_links(links: Sequence[Link]) -> list[Link]:
    seen: set[tuple[int, int]] = set()
    unique = []
    for link in links:
        key = (link.context.trace_id, link.context.span_id)
        if key not in seen:
            seen.add(key)
            unique.append(link)
    return unique


def wall_ns(wall_s: float) -> int:
    """Wall-clock seconds as the nanoseconds span start and end times take."""
    return int(wall_s * 1e9)
