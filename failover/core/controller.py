"""The controller's decision, one component at a time: it reads like the runbook.

1. A shard whose owner is gone (lease expired, self-fenced into a new session, or its
   component instance down) is an orphan: give all orphans to the survivors at once, under
   a new epoch. Safe without waiting, because that owner has already stopped (quorum.py).
2. A shard being drained moves only after its live owner acknowledged the drain: then it is
   transferred under a new epoch (drain -> fence -> transfer, never two owners).
3. Otherwise, when every site that may hold work is stable past its hold-off, start
   draining the next bounded batch towards an even split (hand-back, rebalance, a manual
   drain of a site, or a switchover of one component).

A site under a cap (a canary: at most N shards per component, ``PlacementPolicy.caps``)
is the last resort, like a drained one: orphans and planned moves go to the uncapped
sites, a capped site gets at most its cap, and its shards above the cap leave through
drains. Only when no uncapped site may hold the component at all are the caps lifted, so
a shard is never left without an owner because of a cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from failover.core.fencing import Assignment, Ownership, reassign, set_draining
from failover.core.placement import above_caps, handback_batch, place_orphans, target_owners
from failover.core.topology import Topology


@dataclass(frozen=True)
class SiteView:
    """What the controller knows of one worker site now."""

    name: str
    alive: bool
    session: int
    components_up: frozenset[str]
    components_stable: frozenset[str] = frozenset()
    drained: frozenset[tuple[str, int, int]] = frozenset()
    admin_drained: bool = False
    released: frozenset[tuple[str, int]] = frozenset()  # (component, epoch) given up


@dataclass(frozen=True)
class PlacementPolicy:
    """Operator choices: batch size of planned moves, components pinned to one site, and
    sites capped to at most N shards of each component (a canary's partial undrain)."""

    handback_batch_size: int = 4
    pinned: Mapping[str, str] = field(default_factory=dict)
    caps: Mapping[str, int] = field(default_factory=dict)


class DecisionKind(StrEnum):
    INITIAL = "initial"
    FAILOVER = "failover"
    DRAIN = "drain"
    TRANSFER = "transfer"
    CANCEL_DRAIN = "cancel_drain"


@dataclass(frozen=True)
class Decision:
    """A new ownership document for one component, and why."""

    component: str
    kind: DecisionKind
    ownership: Ownership
    shards: tuple[int, ...]
    reason: str


def decide(
    topology: Topology,
    ownerships: Mapping[str, Ownership],
    views: Mapping[str, SiteView],
    policy: PlacementPolicy,
    *,
    trace_id: str = "",
) -> list[Decision]:
    """Decisions for every component whose ownership should change now."""
    decisions = []
    for component in topology.components:
        decision = decide_component(
            topology, ownerships[component], views, policy, trace_id=trace_id
        )
        if decision is not None:
            decisions.append(decision)
    return decisions


def decide_component(
    topology: Topology,
    current: Ownership,
    views: Mapping[str, SiteView],
    policy: PlacementPolicy,
    *,
    trace_id: str = "",
) -> Decision | None:
    c = current.component
    weights = {s: topology.weight(s) for s in topology.workers}
    caps = policy.caps
    serving = [s for s in topology.workers if site_serves(views.get(s), c)]
    placeable = [s for s in serving if site_placeable(views[s], c, policy)]
    stable = [s for s in placeable if c in views[s].components_stable]
    owners = [a.owner for a in current.shards]

    orphans = [i for i, a in enumerate(current.shards) if not grant_valid(a, views, c)]
    if orphans:
        targets = _orphan_targets(stable, placeable, serving, caps)
        moves = place_orphans(owners, orphans, targets, weights, caps=caps)
        if not moves:
            return None
        kind = DecisionKind.INITIAL if current.max_epoch == 0 else DecisionKind.FAILOVER
        gone = sorted({str(owners[i]) for i in moves})
        reason = f"{len(moves)} shard(s) without a live owner (was: {', '.join(gone)})"
        return _grant(current, moves, views, kind, reason, trace_id)

    # Planned moves go to stable sites; to capped ones beyond their cap only when no
    # uncapped site may hold the component at all (not while one is in hold-off).
    receivers = stable if _uncapped(stable, caps) or not _uncapped(placeable, caps) else []
    draining = [i for i, a in enumerate(current.shards) if a.draining]
    if draining:
        return _finish_drains(current, draining, owners, views, receivers, weights, caps, trace_id)

    if not receivers:
        return None
    if set(stable) != set(placeable):
        # Someone is still in hold-off: only move work off sites that must give it up.
        must_leave = {i for i, o in enumerate(owners) if o not in placeable}
        if _uncapped(receivers, caps):
            must_leave.update(above_caps(owners, caps))
        batch = sorted(must_leave)[: policy.handback_batch_size]
    else:
        size = policy.handback_batch_size
        batch = list(handback_batch(owners, receivers, weights, batch_size=size, caps=caps))
    if not batch:
        return None
    return Decision(
        c,
        DecisionKind.DRAIN,
        set_draining(current, batch, draining=True),
        tuple(batch),
        f"drain {len(batch)} shard(s) towards an even split over {', '.join(receivers)}"
        + _caps_note(receivers, caps),
    )


def _uncapped(sites: Sequence[str], caps: Mapping[str, int]) -> list[str]:
    return [s for s in sites if s not in caps]


def _orphan_targets(
    stable: Sequence[str],
    placeable: Sequence[str],
    serving: Sequence[str],
    caps: Mapping[str, int],
) -> Sequence[str]:
    """Where orphans go: stable sites before those in hold-off, but an uncapped site in
    hold-off before capped sites alone; drained sites only when nothing else serves."""
    for sites in (stable, placeable):
        if _uncapped(sites, caps):
            return sites
    return stable or placeable or serving


def _caps_note(sites: Sequence[str], caps: Mapping[str, int]) -> str:
    capped = [f"{s} at most {caps[s]}" for s in sites if s in caps]
    return f" (canary: {', '.join(capped)})" if capped and _uncapped(sites, caps) else ""


def _finish_drains(
    current: Ownership,
    draining: Sequence[int],
    owners: list[str | None],
    views: Mapping[str, SiteView],
    receivers: Sequence[str],
    weights: Mapping[str, float],
    caps: Mapping[str, int],
    trace_id: str,
) -> Decision | None:
    c = current.component
    acked = [
        i for i in draining if (c, i, current.shards[i].drain_id) in views[str(owners[i])].drained
    ]
    moves: dict[int, str] = {}
    cancel: list[int] = []
    if receivers:
        target = target_owners(owners, receivers, weights, caps=caps)
        for i in acked:
            if target[i] == owners[i]:
                cancel.append(i)  # the even split changed meanwhile: keep it where it is
            else:
                moves[i] = target[i]
    else:
        cancel = list(draining)
    if moves:
        reason = f"transfer {len(moves)} drained shard(s)"
        return _grant(current, moves, views, DecisionKind.TRANSFER, reason, trace_id)
    if cancel:
        if receivers:
            why = "the even split changed; cancel the drain of shards that stay"
        else:  # nobody stable, or only canary sites while an uncapped one is in hold-off
            why = "no stable site may take the drained shards now; cancel the drain"
        return Decision(
            c,
            DecisionKind.CANCEL_DRAIN,
            set_draining(current, cancel, draining=False),
            tuple(cancel),
            why,
        )
    return None


def _grant(
    current: Ownership,
    moves: Mapping[int, str],
    views: Mapping[str, SiteView],
    kind: DecisionKind,
    reason: str,
    trace_id: str,
) -> Decision:
    grants = {i: (site, views[site].session) for i, site in moves.items()}
    new = reassign(current, grants, trace_id=trace_id)
    return Decision(current.component, kind, new, tuple(sorted(moves)), reason)


def site_serves(view: SiteView | None, component: str) -> bool:
    """The site is alive and runs the component."""
    return view is not None and view.alive and component in view.components_up


def site_placeable(view: SiteView, component: str, policy: PlacementPolicy) -> bool:
    """The operator lets the component's shards go to the site (not drained, not pinned
    elsewhere)."""
    pinned = policy.pinned.get(component)
    return not view.admin_drained and (pinned is None or pinned == view.name)


def grant_valid(a: Assignment, views: Mapping[str, SiteView], component: str) -> bool:
    """The owner is alive, on the granted session, runs the component, and has not given
    the grant up (reporting the component down releases its grants up to an epoch)."""
    if a.owner is None:
        return False
    view = views.get(a.owner)
    if view is None or not site_serves(view, component) or view.session != a.session:
        return False
    return all(a.epoch > epoch for c, epoch in view.released if c == component)
