"""The rolling update's executor: the leading controller carries out ``update/state``.

``bfm update apply`` only writes the update's state (``failover.core.updates.start``) to
``update/state``; the leading controller's ``UpdateRunner.tick`` (every ``interval_s``)
does the rest, one step at a time, so an update outlives the CLI that started it and a
new leader continues where the old one stopped:

- a ``pending`` step is marked ``running`` in the store (compare-and-set) *before* its
  action; a ``running`` step found by a new leader gets its action again (every action
  is idempotent: a drain of a drained site, a desired version already written);
- the action: drain/canary/undrain/rebalance through ``failover.runtime.admin`` (the
  controller then moves shards its usual safe way); a component or site item through
  ``update/desired/<site>`` (the site's own process carries it out,
  ``failover.runtime.site_versions``); the gate samples the site's reports;
- each tick checks the step's "done when" (``failover.runtime.update_checks``); done ->
  ``step_done``; a failure or a step running past ``step_timeout_s`` -> ``step_failed``,
  which rolls the site back (``failover.core.update_machine``).

Every write of ``update/state`` is a compare-and-set on the revision read in the same
tick: a ``bfm update abort`` in between wins, and this tick's result is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from failover.core.topology import Topology
from failover.core.update_gate import GateBounds, Verdict, gate_verdict
from failover.core.update_machine import step_done, step_failed, step_started
from failover.core.update_state import Phase, StateError, UpdateState
from failover.core.update_steps import Step, StepKind
from failover.core.versions import ComponentHealth
from failover.ports import Clock, Conflict, CoordinationStore, OutcomeUnknown, StoreError
from failover.runtime import admin
from failover.runtime.update_checks import (
    Snapshot,
    balanced,
    gate_samples,
    precheck_problems,
    read_snapshot,
)
from failover.runtime.version_docs import (
    UPDATE_STATE_KEY,
    DesiredVersions,
    desired_key,
    put_doc,
    read_desired,
)

log = logging.getLogger("bfm.update")
CHANGED_BY = "bfm update"


@dataclass(frozen=True)
class RunnerSettings:
    """Seconds. ``gate``: the bounds besides the soak (each gate step brings its own)."""

    interval_s: float = 0.5
    step_timeout_s: float = 240.0
    precheck_wait_s: float = 60.0
    gate: GateBounds = field(default_factory=GateBounds)


@dataclass
class _Running:
    """What this leader knows of the step it runs (gone with a leader change)."""

    key: tuple[str, int, str]
    started_s: float
    acted_wall_s: float = 0.0
    baseline: dict[str, ComponentHealth | None] | None = None
    soak_started_s: float = 0.0


class UpdateRunner:
    def __init__(
        self,
        store: CoordinationStore,
        *,
        topology: Topology,
        clock: Clock,
        settings: RunnerSettings | None = None,
    ) -> None:
        self.store, self.topology, self.clock = store, topology, clock
        self.settings = settings or RunnerSettings()
        self._running: _Running | None = None
        self._next_s = 0.0
        self._damaged = ""

    def tick(self) -> None:
        """One round (call it often; it acts at most every ``interval_s``)."""
        now_s = self.clock.monotonic()
        if now_s < self._next_s:
            return
        self._next_s = now_s + self.settings.interval_s
        got = self.store.get(UPDATE_STATE_KEY)
        if got is None:
            self._running = None
            return
        try:
            state = UpdateState.from_doc(got.value)
        except StateError as err:
            if str(err) != self._damaged:
                log.error(
                    f"update/state is damaged ({err}); the update waits: inspect it with "
                    "'bfm update status', or abort it with 'bfm update abort --force'",
                    extra={"event": "update_damaged"},
                )
            self._damaged = str(err)
            return
        self._damaged = ""
        if state.finished:
            self._running = None
            return
        new = self._advance(state, now_s)
        if new is not state:
            self._write(new, got.revision)

    # -- one step ----------------------------------------------------------------------

    def _advance(self, state: UpdateState, now_s: float) -> UpdateState:
        i = state.index
        step = state.steps[i]
        key = (state.plan_id, i, step.summary)
        if state.phases[i] is Phase.PENDING:
            self._running = _Running(key, now_s)
            return step_started(state, i)
        if self._running is None or self._running.key != key:
            self._running = _Running(key, now_s)  # resumed: act again, time from now
        running = self._running
        if not running.acted_wall_s:
            failure = self._act(step)
            running.acted_wall_s = self.clock.wall()
            if failure:
                return self._failed(state, i, failure)
            return state
        snap = read_snapshot(self.store, self.topology, now_wall_s=self.clock.wall())
        verdict = self._check(step, snap, running, now_s)
        if verdict is True:
            log.info(
                f"update step done: {step.summary}",
                extra={"event": "update_step_done", "site": step.site, "step": step.kind.value},
            )
            self._running = None
            return step_done(state, i)
        if isinstance(verdict, str):
            return self._failed(state, i, verdict)
        if step.kind is not StepKind.GATE and now_s - running.started_s > self._timeout_s(step):
            why = f"not done after {now_s - running.started_s:.0f} s: {step.summary}"
            if step.kind is StepKind.PRECHECK:
                why = "; ".join(precheck_problems(snap, self.topology)) or why
            return self._failed(state, i, why)
        return state

    def _timeout_s(self, step: Step) -> float:
        if step.kind is StepKind.PRECHECK:
            return self.settings.precheck_wait_s
        return self.settings.step_timeout_s

    def _failed(self, state: UpdateState, i: int, reason: str) -> UpdateState:
        log.warning(
            f"update step failed: {state.steps[i].summary}: {reason}",
            extra={"event": "update_step_failed", "site": state.steps[i].site},
        )
        self._running = None
        return step_failed(state, i, reason)

    def _act(self, step: Step) -> str:
        """Carry the step out (idempotent); a reason when it cannot be."""
        how = {
            "topology": self.topology,
            "clock": self.clock,
            "changed_by": CHANGED_BY,
            "reason": f"update: {step.summary}",
        }
        try:
            if step.kind is StepKind.DRAIN:
                admin.drain(self.store, step.site, **how)  # type: ignore[arg-type]
            elif step.kind is StepKind.CANARY:
                admin.canary(self.store, step.site, step.shards, **how)  # type: ignore[arg-type]
            elif step.kind is StepKind.UNDRAIN:
                admin.undrain(self.store, step.site, **how)  # type: ignore[arg-type]
            elif step.kind is StepKind.REBALANCE:
                admin.rebalance(self.store, **how)  # type: ignore[arg-type]
            elif step.target and step.to_version is not None:
                self._want(step)
        except admin.Refused as err:
            return str(err)
        return ""

    def _want(self, step: Step) -> None:
        assert step.to_version is not None
        desired = read_desired(self.store, step.site) or DesiredVersions()
        if step.kind is StepKind.UPDATE_COMPONENT:
            desired = replace(
                desired, components={**desired.components, step.target: step.to_version}
            )
        else:
            desired = replace(desired, items={**desired.items, step.target: step.to_version})
        put_doc(self.store, desired_key(step.site), desired.to_doc())

    def _check(self, step: Step, snap: Snapshot, running: _Running, now_s: float) -> bool | str:
        """True when done, a reason when failed, False to wait."""
        site, kind = step.site, step.kind
        if kind is StepKind.PRECHECK:
            return not precheck_problems(snap, self.topology)
        if kind is StepKind.DRAIN:
            return site in snap.policy.drained_sites and not any(snap.shards_at(site).values())
        if kind is StepKind.UNDRAIN:
            return site not in snap.policy.drained_sites
        if kind is StepKind.REBALANCE:
            return balanced(snap, self.topology)
        report = snap.fresh_report(site, since_wall_s=running.acted_wall_s)
        if report is None:
            return False
        ready = all(r.ready for r in report.components.values())
        if kind is StepKind.UPDATE_COMPONENT:
            now = report.components.get(step.target)
            return now is not None and now.version == step.to_version and now.ready
        if kind in (StepKind.UPDATE_OS, StepKind.UPDATE_CLUSTER):
            up = site in snap.alive_workers or site not in self.topology.workers
            return report.items.get(step.target) == step.to_version and up and ready
        if kind is StepKind.CANARY:
            held = snap.shards_at(site)
            return ready and all(held.get(c, 0) >= step.shards for c in self.topology.components)
        if kind is StepKind.GATE:
            if running.baseline is None:
                running.baseline = {c: r.health for c, r in report.components.items()}
                running.soak_started_s = now_s
                return False
            bounds = replace(self.settings.gate, soak_s=step.soak_s)
            verdict = gate_verdict(
                gate_samples(running.baseline, report),
                bounds,
                soak_started_s=running.soak_started_s,
                now_s=now_s,
            )
            if verdict.verdict is Verdict.PASS:
                return True
            return verdict.reason if verdict.verdict is Verdict.FAIL else False
        return False

    def _write(self, state: UpdateState, revision: str) -> None:
        try:
            self.store.compare_and_set(UPDATE_STATE_KEY, state.to_doc(), expected_revision=revision)
        except Conflict:
            self._running = None  # someone else wrote (an abort): read again next tick
        except (OutcomeUnknown, StoreError) as err:
            log.warning(f"cannot write update/state: {err}", extra={"event": "update_write"})
