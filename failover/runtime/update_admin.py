"""Starting, reading and aborting a rolling update in the store (``bfm update``).

``begin`` checks that the system is not unlicensed (``license_docs.change_refused``) and
that it may start an update now (``update_checks``'s precheck:
every site up and reporting, no failover or hand-back running, nothing drained, pinned or
capped, placement even, components ready) and writes the update's first state to
``update/state``; the leading controller's ``UpdateRunner`` carries it out. A finished
update's state is replaced; a running one is never.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from failover.core.audit import Outcome
from failover.core.topology import Topology
from failover.core.update_machine import abort, start
from failover.core.update_plan import Versions
from failover.core.update_state import StateError, UpdateState
from failover.core.update_steps import Plan
from failover.ports import Conflict, CoordinationStore
from failover.runtime.admin import Refused
from failover.runtime.audit_log import AuditTrail
from failover.runtime.license_docs import change_refused
from failover.runtime.update_checks import precheck_problems, read_snapshot
from failover.runtime.version_docs import UPDATE_STATE_KEY, read_reported


def current_versions(store: CoordinationStore, topology: Topology) -> Versions:
    """``site -> name -> version`` as the sites report them (the planner's ``current``)."""
    reports = read_reported(store)
    return {s: reports[s].versions() for s in topology.site_names if s in reports}


def damaged(err: StateError) -> str:
    """What to say of an unreadable ``update/state``, and how to get rid of it."""
    return f"update/state is damaged ({err}); remove it with 'bfm update abort --force'"


def read_update(store: CoordinationStore) -> tuple[UpdateState | None, str]:
    """The update's state (None: no update was ever started) and its revision.

    StateError when the document is damaged (the message names the field)."""
    got = store.get(UPDATE_STATE_KEY)
    if got is None:
        return None, ""
    return UpdateState.from_doc(got.value), got.revision


def begin(
    store: CoordinationStore,
    plan: Plan,
    current: Versions,
    *,
    topology: Topology,
    now_wall_s: float,
    audit: AuditTrail | None = None,
) -> UpdateState:
    """Write the update's first state; ``Refused`` (saying why and what to do) when one is
    running or the system is not ready for it, StateError when the plan is stale. With
    ``audit``, the start or the refusal is one audit record."""
    what = f"update to release {plan.release} ({len(plan.steps)} steps)"
    try:
        before, first = _begin(store, plan, current, topology=topology, now_wall_s=now_wall_s)
    except Refused as err:
        if audit is not None:
            audit.record("update.begin", f"{what}: refused: {err}", outcome=Outcome.REFUSED)
        raise
    if audit is not None:
        audit.record("update.begin", f"{what} started", before=before, after=first.to_doc())
    return first


def _begin(
    store: CoordinationStore,
    plan: Plan,
    current: Versions,
    *,
    topology: Topology,
    now_wall_s: float,
) -> tuple[Mapping[str, Any] | None, UpdateState]:
    """``begin``'s work: the state it replaced (a finished update's, or None) and the new."""
    state, revision = _existing(store)
    if state is not None and not state.finished:
        raise Refused(
            f"update to release {state.release} is still running (step {state.index + 1} of "
            f"{len(state.steps)}); follow it with 'bfm update status' or stop it with "
            "'bfm update abort'"
        )
    refused = change_refused(store, change=f"the update to release {plan.release}")
    if refused:
        raise Refused(refused)
    problems = precheck_problems(read_snapshot(store, topology, now_wall_s=now_wall_s), topology)
    if problems:
        raise Refused(
            "the system is not ready for an update: "
            + "; ".join(problems)
            + "; wait until 'bfm status' shows every site up and the placement even"
        )
    first = start(plan, current)
    doc: Mapping[str, Any] = first.to_doc()
    try:
        if revision:
            store.compare_and_set(UPDATE_STATE_KEY, dict(doc), expected_revision=revision)
        else:
            store.create(UPDATE_STATE_KEY, dict(doc))
    except Conflict:
        raise Refused(
            "another update was started at the same moment; see 'bfm update status'"
        ) from None
    return (state.to_doc() if state is not None else None), first


def abort_update(
    store: CoordinationStore, *, force: bool = False, audit: AuditTrail | None = None
) -> tuple[UpdateState | None, bool]:
    """Abort the running update (compare-and-set; retried when the executor wrote in
    between): the state and whether this call aborted it (False: it had ended, or no
    update was ever started, then None). ``force`` removes a damaged state. With
    ``audit``, what came of it is one audit record."""
    got = store.get(UPDATE_STATE_KEY) if audit is not None else None
    before = got.value if got is not None else None
    state, aborted = _abort_update(store, force=force)
    if audit is not None:
        if aborted and state is not None:
            what, outcome = f"update to release {state.release} aborted", Outcome.DONE
        elif state is None and before is not None:
            what, outcome = "damaged update state removed (--force)", Outcome.DONE
        else:
            what, outcome = "update abort: no update running, nothing to abort", Outcome.UNCHANGED
        after = state.to_doc() if state is not None else None
        audit.record("update.abort", what, before=before, after=after, outcome=outcome)
    return state, aborted


def _abort_update(store: CoordinationStore, *, force: bool) -> tuple[UpdateState | None, bool]:
    for _ in range(10):
        try:
            state, revision = read_update(store)
        except StateError:
            if not force:
                raise
            got = store.get(UPDATE_STATE_KEY)
            if got is not None:
                store.delete(UPDATE_STATE_KEY, expected_revision=got.revision)
            return None, False
        if state is None or state.finished:
            return state, False
        stopped = abort(state)
        try:
            store.compare_and_set(UPDATE_STATE_KEY, stopped.to_doc(), expected_revision=revision)
        except Conflict:
            continue
        return stopped, True
    raise Refused("the update's state kept changing under the abort; try again")


def _existing(store: CoordinationStore) -> tuple[UpdateState | None, str]:
    try:
        return read_update(store)
    except StateError as err:
        raise Refused(damaged(err)) from None
