"""The stored state of a rolling update: steps, phases, outcome, and its document form.

One ``UpdateState`` document lives in the coordination store while an update runs, so a
restarted controller resumes where the last one stopped. ``to_doc`` gives plain JSON
(schema ``bfm.update-state/1``); ``from_doc`` refuses anything the transitions in
``update_machine`` could not have produced, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from failover.core.update_steps import Plan, Purpose, Step

SCHEMA = "bfm.update-state/1"


class StateError(ValueError):
    """A stored update state that cannot be read, or a transition that does not apply."""


class StaleStep(StateError):
    """A step reported done or failed that is not the current one (an abort moved on)."""


class Phase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # may be half done: check the kind's done_when before acting again
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # never run, or interrupted by an abort


class Outcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every site at the release
    ROLLED_BACK = "rolled_back"  # the failing site back at its versions before; stopped
    ABORTED = "aborted"  # stopped by the operator, balanced; sites as far as they got
    FAILED = "failed"  # stopped where nothing could be rolled back, or a rollback step failed


@dataclass(frozen=True)
class UpdateState:
    """Where one release's update stands.

    ``steps`` begins with the plan's steps; a rollback or an abort appends its own and
    marks the plan's remaining ones skipped. ``index`` is the current step (``len(steps)``
    once finished); ``phases`` and ``notes`` (a failure's reason, "" otherwise) go with
    ``steps``. ``before`` holds every site's versions when the update started. ``mode``
    says whose steps are running: the release's, a rollback's or an abort's.
    """

    plan: Plan
    steps: tuple[Step, ...]
    phases: tuple[Phase, ...]
    notes: tuple[str, ...]
    index: int
    before: Mapping[str, Mapping[str, str]]
    mode: Purpose = Purpose.UPDATE
    outcome: Outcome = Outcome.RUNNING
    reason: str = ""

    @property
    def release(self) -> str:
        return self.plan.release

    @property
    def plan_id(self) -> str:
        return self.plan.plan_id

    @property
    def finished(self) -> bool:
        return self.outcome is not Outcome.RUNNING

    def to_doc(self) -> dict[str, Any]:
        """A plain JSON-able document (schema ``bfm.update-state/1``)."""
        return {
            "schema": SCHEMA,
            "release": self.plan.release,
            "plan_id": self.plan.plan_id,
            "plan_steps": len(self.plan.steps),
            "index": self.index,
            "mode": self.mode.value,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "before": {s: dict(sorted(v.items())) for s, v in sorted(self.before.items())},
            "steps": [
                {**step.to_doc(), "phase": phase.value, "note": note}
                for step, phase, note in zip(self.steps, self.phases, self.notes, strict=True)
            ],
        }

    @staticmethod
    def from_doc(doc: Any) -> UpdateState:
        """Read ``to_doc``'s output back; anything else raises StateError naming the field."""
        try:
            return _from_doc(doc)
        except StateError:
            raise
        except ValueError as err:
            raise StateError(f"update state unreadable: {err}") from None


def _from_doc(doc: Any) -> UpdateState:
    if not isinstance(doc, Mapping):
        raise StateError(f"an update state must be an object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise StateError(
            f"field 'schema' is {doc.get('schema')!r}, expected {SCHEMA!r}: written by another "
            "version of bfm, or not an update state"
        )
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list):
        raise StateError(f"field 'steps' must be a list, got {type(raw_steps).__name__}")
    steps: list[Step] = []
    phases: list[Phase] = []
    notes: list[str] = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, Mapping):
            raise StateError(f"field 'steps[{i}]' must be an object, got {type(raw).__name__}")
        fields = dict(raw)
        phase, note = fields.pop("phase", None), fields.pop("note", None)
        if not isinstance(phase, str) or phase not in {p.value for p in Phase}:
            raise StateError(
                f"field 'steps[{i}].phase' must be one of {_names(Phase)}, got {phase!r}"
            )
        if not isinstance(note, str):
            raise StateError(f"field 'steps[{i}].note' must be a string, got {note!r}")
        steps.append(Step.from_doc(fields, f"steps[{i}]"))
        phases.append(Phase(phase))
        notes.append(note)
    plan = _plan(doc, steps)
    index = doc.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(steps):
        raise StateError(f"field 'index' must be an integer in [0, {len(steps)}], got {index!r}")
    mode, outcome, reason = doc.get("mode"), doc.get("outcome"), doc.get("reason")
    if not isinstance(mode, str) or mode not in {p.value for p in Purpose}:
        raise StateError(f"field 'mode' must be one of {_names(Purpose)}, got {mode!r}")
    if not isinstance(outcome, str) or outcome not in {o.value for o in Outcome}:
        raise StateError(f"field 'outcome' must be one of {_names(Outcome)}, got {outcome!r}")
    if not isinstance(reason, str):
        raise StateError(f"field 'reason' must be a string, got {reason!r}")
    state = UpdateState(
        plan=plan,
        steps=tuple(steps),
        phases=tuple(phases),
        notes=tuple(notes),
        index=index,
        before=_before(doc.get("before")),
        mode=Purpose(mode),
        outcome=Outcome(outcome),
        reason=reason,
    )
    _check_consistent(state)
    return state


def _plan(doc: Mapping[str, Any], steps: Sequence[Step]) -> Plan:
    release, count, plan_id = doc.get("release"), doc.get("plan_steps"), doc.get("plan_id")
    if not isinstance(release, str) or not release:
        raise StateError(f"field 'release' must be a release name, got {release!r}")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(steps):
        raise StateError(
            f"field 'plan_steps' must be an integer in [0, {len(steps)}], got {count!r}"
        )
    plan = Plan(release, tuple(steps[:count]))
    if plan_id != plan.plan_id:
        raise StateError(
            f"field 'plan_id' is {plan_id!r} but the plan's steps digest to {plan.plan_id!r}: "
            "the stored plan was changed or damaged"
        )
    return plan


def _before(raw: Any) -> dict[str, dict[str, str]]:
    if not isinstance(raw, Mapping):
        raise StateError(f"field 'before' must be an object of site -> versions, got {raw!r}")
    result: dict[str, dict[str, str]] = {}
    for site, versions in raw.items():
        if not isinstance(site, str) or not isinstance(versions, Mapping):
            raise StateError(f"field 'before.{site}' must be an object of name -> version")
        for name, version in versions.items():
            if not isinstance(name, str) or not isinstance(version, str) or not version:
                raise StateError(f"field 'before.{site}.{name}' must be a version, got {version!r}")
        result[site] = dict(versions)
    return result


def _check_consistent(state: UpdateState) -> None:
    """Phases must agree with the index and the outcome, as the transitions leave them."""
    n = len(state.steps)
    finished = {Phase.DONE, Phase.FAILED, Phase.SKIPPED}
    if any(p not in finished for p in state.phases[: state.index]):
        raise StateError(f"steps before the current one ({state.index}) must be finished")
    if state.finished:
        if state.index != n:
            raise StateError(
                f"a {state.outcome.value} update must have index {n}, got {state.index}"
            )
        return
    if state.index == n:
        raise StateError("a running update must have a current step")
    if state.phases[state.index] not in {Phase.PENDING, Phase.RUNNING}:
        raise StateError(f"the current step {state.index} must be pending or running")
    if any(p is not Phase.PENDING for p in state.phases[state.index + 1 :]):
        raise StateError(f"steps after the current one ({state.index}) must be pending")


def _names(enum: type[StrEnum]) -> str:
    return ", ".join(e.value for e in enum)
