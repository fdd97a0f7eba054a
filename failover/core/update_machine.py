"""The transitions of a rolling update: next step, done, failed (rollback), abort.

The runtime keeps one ``UpdateState`` in the coordination store and drives it with these
pure functions::

    state = start(plan, current_versions)
    while (step := next_step(state)) is not None:
        state = step_started(state, state.index)   # stored before acting
        ... run the step (found running after a restart: check its kind's done_when) ...
        state = step_done(state, state.index)      # or step_failed(state, i, reason)

``step_failed`` at a worker site switches to that site's rollback (appended steps: drain
again if its canary took shards back, restore its updated components in reverse order,
undrain, rebalance) and ends ``rolled_back``; the other site is not touched. ``abort``
skips what is left and only undrains and rebalances a site the update had drained. A
failed precheck, a failed witness step, or a failure during a rollback or an abort stops
at once (``failed``): there is nothing to roll back, or the operator must look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from failover.core.update_plan import Versions
from failover.core.update_state import Outcome, Phase, StaleStep, StateError, UpdateState
from failover.core.update_steps import (
    Plan,
    Purpose,
    Step,
    StepKind,
    drain_step,
    recovery_steps,
    update_component_step,
)

OTHER_SITE = "the other worker site"
# after one of these has started, the site may hold shards again: a rollback drains it first
_GAVE_SHARDS_BACK = frozenset(
    {StepKind.CANARY, StepKind.GATE, StepKind.UNDRAIN, StepKind.REBALANCE}
)
# the last of these started at a site tells whether it is drained, undrained, or settled
_MOVES_SHARDS = frozenset({StepKind.DRAIN, StepKind.CANARY, StepKind.UNDRAIN, StepKind.REBALANCE})


_ENDS = {
    Purpose.UPDATE: Outcome.SUCCEEDED,
    Purpose.ROLLBACK: Outcome.ROLLED_BACK,
    Purpose.ABORT: Outcome.ABORTED,
}
_STARTED = frozenset({Phase.RUNNING, Phase.DONE, Phase.FAILED})


def start(plan: Plan, current_versions: Versions) -> UpdateState:
    """The state before the first step; an empty plan is finished (``succeeded``) at once.

    StateError when ``current_versions`` differ from the versions the plan was made from
    (something changed since planning: plan again).
    """
    for step in plan.steps:
        if step.from_version is None or not step.target:
            continue
        now = current_versions.get(step.site, {}).get(step.target)
        if now != step.from_version:
            raise StateError(
                f"the plan expects {step.target} {step.from_version} at {step.site}, but it "
                f"runs {now or 'nothing known'}; make the plan again from the current versions"
            )
    n = len(plan.steps)
    state = UpdateState(
        plan=plan,
        steps=plan.steps,
        phases=(Phase.PENDING,) * n,
        notes=("",) * n,
        index=0,
        before={s: dict(v) for s, v in current_versions.items()},
    )
    if n == 0:
        return replace(
            state,
            outcome=Outcome.SUCCEEDED,
            reason=f"nothing to do: every site already runs release {plan.release}",
        )
    return state


def next_step(state: UpdateState) -> Step | None:
    """The step to run now (it may be ``running`` after a restart), or None when finished."""
    return None if state.finished else state.steps[state.index]


def step_started(state: UpdateState, step_index: int) -> UpdateState:
    """Mark the current step running; store this before acting on it."""
    _check_current(state, step_index)
    return _set(state, step_index, Phase.RUNNING)


def step_done(state: UpdateState, step_index: int) -> UpdateState:
    """The current step is done: move on (a repeated report of a done step changes nothing)."""
    if _repeat(state, step_index, Phase.DONE):
        return state
    _check_current(state, step_index)
    return _advance(_set(state, step_index, Phase.DONE))


def step_failed(state: UpdateState, step_index: int, reason: str) -> UpdateState:
    """The current step failed: roll its worker site back, or stop (see the module doc)."""
    if _repeat(state, step_index, Phase.FAILED):
        return state
    _check_current(state, step_index)
    step = state.steps[step_index]
    failed = _set(state, step_index, Phase.FAILED, note=reason)
    what = f"'{step.summary}' failed: {reason}"
    if state.mode is not Purpose.UPDATE:
        site = step.site
        return _stop(
            failed,
            Outcome.FAILED,
            f"{what}, during the {state.mode.value}; the operator must finish it: check "
            f"{site}, then 'bfm undrain {site}' and 'bfm rebalance'",
        )
    done = _sites_done(state)
    at_release = f"; release {state.release} stays at {', '.join(done)}" if done else ""
    if step.kind is StepKind.PRECHECK:
        return _stop(failed, Outcome.FAILED, f"{what}; nothing changed at {step.site}{at_release}")
    if step.site not in _drained_by_plan(state):
        return _stop(
            failed,
            Outcome.FAILED,
            f"{what}; site-level steps cannot be rolled back, so check {step.site} by hand; "
            f"no work had moved{at_release}",
        )
    kept = _items_kept(failed, step.site)
    if kept:
        kept = f" (site-level steps are not rolled back: {kept} stay as far as they got)"
    return _append(
        failed,
        rollback_steps(failed, step.site),
        Purpose.ROLLBACK,
        f"{what}; {step.site} rolled back to its versions before{kept}{at_release}",
    )


def abort(state: UpdateState) -> UpdateState:
    """Stop: skip what is left, and only undrain and rebalance a site the update drained.

    A running step is marked skipped (call this between steps, or while a step may be
    cut short, such as a gate); its effect stands as far as it got. Components stay at
    the version each reached: an abort restores nothing (apply the previous release for
    that). Aborting a finished or aborting update changes nothing.
    """
    if state.finished or state.mode is Purpose.ABORT:
        return state
    steps: list[Step] = []
    unsettled = unsettled_sites(state)
    for site, undrained in unsettled.items():
        undrain, rebalance = recovery_steps(site, OTHER_SITE, Purpose.ABORT)
        steps += [rebalance] if undrained else [undrain, rebalance]
    reason = "aborted by the operator"
    if unsettled:
        reason += f"; {', '.join(unsettled)} undrained and rebalanced before stopping"
    return _append(state, steps, Purpose.ABORT, reason, note="skipped: aborted")


def unsettled_sites(state: UpdateState) -> dict[str, bool]:
    """Worker sites this update drained (wholly or to a canary) and has not rebalanced since.

    The value is True when the site's undrain is already done and only the rebalance is
    left. Judged from the last started drain, canary, undrain or rebalance of each site.
    """
    last: dict[str, tuple[StepKind, Phase]] = {}
    for step, phase in zip(state.steps, state.phases, strict=True):
        if phase in _STARTED and step.kind in _MOVES_SHARDS:
            last[step.site] = (step.kind, phase)
    return {
        site: kind is StepKind.REBALANCE or (kind is StepKind.UNDRAIN and phase is Phase.DONE)
        for site, (kind, phase) in last.items()
        if not (kind is StepKind.REBALANCE and phase is Phase.DONE)
    }


def rollback_steps(state: UpdateState, site: str) -> list[Step]:
    """Steps that bring ``site`` back: drain again if it held shards since, restore every
    component whose update started (reverse order: the backbone first), undrain, rebalance."""
    started = [
        step
        for step, phase in zip(state.steps, state.phases, strict=True)
        if step.site == site and step.purpose is Purpose.UPDATE and phase in _STARTED
    ]
    steps: list[Step] = []
    if any(s.kind in _GAVE_SHARDS_BACK for s in started):
        steps.append(drain_step(site, OTHER_SITE, Purpose.ROLLBACK))
    for s in reversed(started):
        if s.kind is StepKind.UPDATE_COMPONENT:
            previous = state.before.get(site, {}).get(s.target, s.from_version)
            if previous is not None and s.to_version is not None:
                steps.append(
                    update_component_step(site, s.target, s.to_version, previous, rollback=True)
                )
    steps.extend(recovery_steps(site, OTHER_SITE, Purpose.ROLLBACK))
    return steps


# -- helpers ---------------------------------------------------------------------------------


def _check_current(state: UpdateState, step_index: int) -> None:
    if state.finished:
        raise StaleStep(f"the update of release {state.release} is {state.outcome.value}")
    if step_index != state.index:
        raise StaleStep(
            f"step {step_index} is not the current step ({state.index}: "
            f"'{state.steps[state.index].summary}'); read the state again"
        )


def _repeat(state: UpdateState, step_index: int, phase: Phase) -> bool:
    return 0 <= step_index < len(state.steps) and state.phases[step_index] is phase


def _set(state: UpdateState, i: int, phase: Phase, *, note: str | None = None) -> UpdateState:
    phases = (*state.phases[:i], phase, *state.phases[i + 1 :])
    notes = state.notes if note is None else (*state.notes[:i], note, *state.notes[i + 1 :])
    return replace(state, phases=phases, notes=notes)


def _advance(state: UpdateState) -> UpdateState:
    index = state.index + 1
    if index < len(state.steps):
        return replace(state, index=index)
    outcome = _ENDS[state.mode]
    reason = state.reason or f"release {state.release} applied at {', '.join(state.plan.sites)}"
    return replace(state, index=index, outcome=outcome, reason=reason)


def _append(
    state: UpdateState, steps: Sequence[Step], mode: Purpose, reason: str, note: str = ""
) -> UpdateState:
    """Skip the rest and continue with ``steps`` (or finish when there are none)."""
    skip = range(state.index, len(state.steps))
    phases = tuple(
        Phase.SKIPPED if i in skip and p is not Phase.FAILED else p
        for i, p in enumerate(state.phases)
    )
    notes = tuple(
        note if i in skip and p is not Phase.FAILED and note else n
        for i, (p, n) in enumerate(zip(state.phases, state.notes, strict=True))
    )
    moved = replace(
        state,
        steps=state.steps + tuple(steps),
        phases=phases + (Phase.PENDING,) * len(steps),
        notes=notes + ("",) * len(steps),
        index=len(state.steps),
        mode=mode,
        reason=reason,
    )
    if not steps:
        return replace(moved, outcome=_ENDS[mode])
    return moved


def _stop(state: UpdateState, outcome: Outcome, reason: str) -> UpdateState:
    return replace(_append(state, (), state.mode, reason), outcome=outcome)


def _drained_by_plan(state: UpdateState) -> set[str]:
    return {s.site for s in state.plan.steps if s.kind is StepKind.DRAIN}


def _sites_done(state: UpdateState) -> list[str]:
    """Worker sites whose update finished (their final rebalance done)."""
    return [
        s.site
        for s, p in zip(state.steps, state.phases, strict=True)
        if s.kind is StepKind.REBALANCE and s.purpose is Purpose.UPDATE and p is Phase.DONE
    ]


def _items_kept(state: UpdateState, site: str) -> str:
    kept = [
        f"{s.target} -> {s.to_version}"
        for s, p in zip(state.steps, state.phases, strict=True)
        if s.site == site
        and s.kind in (StepKind.UPDATE_OS, StepKind.UPDATE_CLUSTER)
        and p in _STARTED
    ]
    return ", ".join(kept)
