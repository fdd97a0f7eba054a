"""The operator's choices (drain, canary, switchover, rebalance) and the decision history.

The operator's desired state is one document, ``admin/policy`` (``AdminPolicy``): the
sites drained of all work, the sites limited to a canary share, and the components pinned
to one site. Every operation here
reads it, checks the change against the topology and the sites' leases, and writes it
back by compare-and-set, retrying a bounded number of times when someone else wrote in
between. The leading controller reads it every decision round and applies it
(``effective_policy``); the moves themselves are the controller's usual safe ones: a
live owner's shard moves only through drain -> acknowledge -> transfer under a new epoch,
a bounded batch per component at a time, so no shard ever has two owners.

- ``drain(site)``: the site gets no work; its shards move to the other worker site (a
  canary limit of the site is replaced by the drain).
- ``canary(site, n)``: a partial undrain: the site may hold at most ``n`` shards of each
  component, so a little live traffic passes it while the rest stays on the other site;
  once it is stable past its hold-off it gets them (drain -> acknowledge -> transfer),
  and any it holds above ``n`` move away the same way.
- ``undrain(site)``: the site may hold work again, all of it (a drain or a canary limit
  is lifted); the hand-back evens the split out once the site is stable past its hold-off.
- ``switchover(component, to_site)``: pin the component to a site; all its shards move
  there (and stay, even if the other site would be less loaded).
- ``rebalance()``: clear every pin. Each component then spreads evenly over the worker
  sites that are not drained, batch by batch, once every such site is stable past its
  hold-off: the same hand-back that follows a site's return. It does not undrain a site
  and does not cut the hold-off short; with nothing pinned it changes nothing, because
  the controller already evens the split out by itself.

Every operation here appends one entry for the operator's change to the decision history
(``failover.runtime.events``), and, given an ``audit`` trail, one audit record of what
came of it, refusals included (``failover.runtime.audit_log``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from failover.core.agent import LeaseRecord
from failover.core.audit import Outcome
from failover.core.controller import PlacementPolicy
from failover.core.fencing import Ownership
from failover.core.placement import above_caps, moves_to, target_owners
from failover.core.topology import Topology
from failover.ports import Clock, Conflict, CoordinationStore, OutcomeUnknown, StoreError
from failover.runtime.audit_log import AuditTrail
from failover.runtime.documents import (
    ADMIN_POLICY_KEY,
    AdminPolicy,
    Event,
    lease_key,
    ownership_key,
)
from failover.runtime.events import EventLog

DEFAULT_ATTEMPTS = 5
ADMIN_EVENT_KIND = "admin"


class Refused(Exception):
    """The operation is understood but unsafe or impossible now; the message says why."""


@dataclass(frozen=True)
class PolicyChange:
    """What an operation did to ``admin/policy``, and what the controller will do next."""

    action: str
    before: AdminPolicy
    after: AdminPolicy
    changed: bool
    summary: str  # one sentence: what changed, or why nothing did
    replaced_damaged: str = ""  # why the stored document could not be read, if it could not


@dataclass(frozen=True)
class Facts:
    """What the sites' leases say now: who is alive and which components each runs."""

    alive: frozenset[str]
    components_up: Mapping[str, frozenset[str]]


# -- reading -------------------------------------------------------------------------------


def read_policy(store: CoordinationStore) -> AdminPolicy:
    """The operator's desired state (the default when none was written).

    A damaged document raises ValueError naming the field; the controller keeps its last
    good one meanwhile, and the next operation replaces it.
    """
    got = store.get(ADMIN_POLICY_KEY)
    return AdminPolicy() if got is None else AdminPolicy.from_doc(got.value)


def effective_policy(
    admin: AdminPolicy, topology: Topology, base: PlacementPolicy
) -> tuple[frozenset[str], PlacementPolicy, list[str]]:
    """The drained worker sites and the placement policy the controller applies.

    Pins are merged over ``base``'s (the operator's win), and so are the canary limits
    (``caps``). Entries naming a site that is not a worker or an unknown component are
    ignored and listed, never guessed at.
    """
    ignored: list[str] = []
    drained = set()
    for site in admin.drained_sites:
        if topology.is_worker(site):
            drained.add(site)
        else:
            ignored.append(f"drained site {site!r} is not a worker site")
    pinned = dict(base.pinned)
    for component, site in admin.pinned.items():
        if component not in topology.components:
            ignored.append(f"pin of unknown component {component!r}")
        elif not topology.is_worker(site):
            ignored.append(f"pin of {component} to {site!r}, not a worker site")
        else:
            pinned[component] = site
    caps = dict(base.caps)
    for site, shards in admin.canary.items():
        if not topology.is_worker(site):
            ignored.append(f"canary of site {site!r}, not a worker site")
        elif site in drained:
            ignored.append(f"canary of site {site}, which is drained")
        else:
            caps[site] = shards
    return frozenset(drained), replace(base, pinned=pinned, caps=caps), ignored


# -- changing --------------------------------------------------------------------------------


def drain(
    store: CoordinationStore,
    site: str,
    *,
    topology: Topology,
    clock: Clock,
    changed_by: str = "operator",
    reason: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    audit: AuditTrail | None = None,
) -> PolicyChange:
    """Take every shard away from ``site`` (batch by batch) and give it none until undrained.

    A canary limit of ``site`` is lifted (drained is less than any canary). ValueError for
    an unknown or witness site; ``Refused`` when no other worker site is alive, not drained
    and not limited to a canary (the work would have nowhere to go), or when a component
    is pinned to ``site``.
    """
    _check_worker(topology, site)

    def edit(policy: AdminPolicy, facts: Facts) -> AdminPolicy:
        if site in policy.drained_sites and site not in policy.canary:
            return policy
        pins = sorted(c for c, s in policy.pinned.items() if s == site)
        if pins:
            others = [w for w in topology.workers if w != site]
            raise Refused(
                f"cannot drain {site}: {', '.join(pins)} pinned to it; switch "
                f"{'them' if len(pins) > 1 else 'it'} to {' or '.join(others)} first, or clear "
                "every pin with 'bfm rebalance'"
            )
        if not _others_take_all(site, policy, facts, topology):
            why = "; ".join(_why_not(w, policy, facts) for w in topology.workers if w != site)
            raise Refused(
                f"cannot drain {site}: it is the last worker site that could serve ({why})"
            )
        canary = {s: n for s, n in policy.canary.items() if s != site}
        drained = tuple(sorted({*policy.drained_sites, site}))
        return replace(policy, drained_sites=drained, canary=canary)

    return _change(
        store,
        f"drain {site}",
        edit,
        topology,
        clock,
        changed_by,
        reason,
        attempts,
        audit,
        unchanged=f"site {site} is already drained",
    )


def undrain(
    store: CoordinationStore,
    site: str,
    *,
    topology: Topology,
    clock: Clock,
    changed_by: str = "operator",
    reason: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    audit: AuditTrail | None = None,
) -> PolicyChange:
    """Let ``site`` hold work again, all of it (a drain or a canary limit is lifted); the
    split evens out after its hold-off."""
    _check_worker(topology, site)

    def edit(policy: AdminPolicy, facts: Facts) -> AdminPolicy:
        kept = tuple(s for s in policy.drained_sites if s != site)
        canary = {s: n for s, n in policy.canary.items() if s != site}
        return replace(policy, drained_sites=kept, canary=canary)

    return _change(
        store,
        f"undrain {site}",
        edit,
        topology,
        clock,
        changed_by,
        reason,
        attempts,
        audit,
        unchanged=f"site {site} is neither drained nor limited to a canary",
    )


def canary(
    store: CoordinationStore,
    site: str,
    shards_per_component: int,
    *,
    topology: Topology,
    clock: Clock,
    changed_by: str = "operator",
    reason: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    audit: AuditTrail | None = None,
) -> PolicyChange:
    """A partial undrain: ``site`` may hold at most ``shards_per_component`` shards of each
    component, the rest stays on (or moves to) the other worker sites.

    The site leaves the drained sites; undrain lifts the limit, drain replaces it. The
    shards come to it once it is stable past its hold-off, and any it holds above the
    limit move away, both through drains. ValueError for an unknown or witness site or a
    count that is not an integer >= 1; ``Refused`` when a component is pinned to ``site``
    (the pin would hold all its shards there), or when no other worker site is alive, not
    drained and not itself a canary (the rest of the work would have nowhere to go).
    """
    _check_worker(topology, site)
    n = shards_per_component
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a canary's shards per component must be an integer >= 1, got {n!r}")

    def edit(policy: AdminPolicy, facts: Facts) -> AdminPolicy:
        if policy.canary.get(site) == n and site not in policy.drained_sites:
            return policy
        pins = sorted(c for c, s in policy.pinned.items() if s == site)
        if pins:
            raise Refused(
                f"cannot limit {site} to a canary: {', '.join(pins)} pinned to it; clear "
                "every pin with 'bfm rebalance' first"
            )
        if not _others_take_all(site, policy, facts, topology):
            why = "; ".join(_why_not(w, policy, facts) for w in topology.workers if w != site)
            raise Refused(
                f"cannot limit {site} to a canary: no other worker site could take the rest "
                f"of the work ({why}); undrain it fully with 'bfm undrain {site}' instead"
            )
        drained = tuple(s for s in policy.drained_sites if s != site)
        return replace(policy, drained_sites=drained, canary={**policy.canary, site: n})

    return _change(
        store,
        f"canary {site} at {n} shard(s) per component",
        edit,
        topology,
        clock,
        changed_by,
        reason,
        attempts,
        audit,
        unchanged=f"site {site} is already limited to a canary of {n} shard(s) per component",
    )


def switchover(
    store: CoordinationStore,
    component: str,
    to_site: str,
    *,
    topology: Topology,
    clock: Clock,
    changed_by: str = "operator",
    reason: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    audit: AuditTrail | None = None,
) -> PolicyChange:
    """Pin ``component`` to ``to_site``: all its shards move there and stay until rebalanced.

    ValueError for an unknown component or site; ``Refused`` when ``to_site`` is drained,
    not alive, or does not run the component now.
    """
    topology.check_component(component)
    _check_worker(topology, to_site)

    def edit(policy: AdminPolicy, facts: Facts) -> AdminPolicy:
        if policy.pinned.get(component) == to_site:
            return policy
        if to_site in policy.drained_sites:
            raise Refused(
                f"cannot switch {component} to {to_site}: site {to_site} is drained; "
                f"undrain it first ('bfm undrain {to_site}')"
            )
        if to_site in policy.canary:
            raise Refused(
                f"cannot switch {component} to {to_site}: site {to_site} is limited to a "
                f"canary of {policy.canary[to_site]} shard(s) per component; undrain it "
                f"fully first ('bfm undrain {to_site}')"
            )
        if to_site not in facts.alive:
            why = _why_not(to_site, policy, facts)
            raise Refused(f"cannot switch {component} to {to_site}: {why}")
        if component not in facts.components_up.get(to_site, frozenset()):
            raise Refused(
                f"cannot switch {component} to {to_site}: {component} is not up at {to_site}"
            )
        return replace(policy, pinned={**policy.pinned, component: to_site})

    return _change(
        store,
        f"switchover {component} to {to_site}",
        edit,
        topology,
        clock,
        changed_by,
        reason,
        attempts,
        audit,
        unchanged=f"{component} is already pinned to {to_site}",
    )


def rebalance(
    store: CoordinationStore,
    *,
    topology: Topology,
    clock: Clock,
    changed_by: str = "operator",
    reason: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    audit: AuditTrail | None = None,
) -> PolicyChange:
    """Clear every pin: each component spreads evenly again (see the module docstring)."""

    def edit(policy: AdminPolicy, facts: Facts) -> AdminPolicy:
        return replace(policy, pinned={})

    return _change(
        store,
        "rebalance",
        edit,
        topology,
        clock,
        changed_by,
        reason,
        attempts,
        audit,
        unchanged="nothing is pinned; the controller evens the split out by itself",
    )


def _check_worker(topology: Topology, site: str) -> None:
    topology.site(site)  # ValueError naming the known sites
    if not topology.is_worker(site):
        raise ValueError(
            f"site {site!r} is a witness and never runs work; worker sites: "
            f"{', '.join(topology.workers)}"
        )


def _others_take_all(site: str, policy: AdminPolicy, facts: Facts, topology: Topology) -> bool:
    """Another worker site is alive and may hold any amount of work (not drained, no
    canary)."""
    return any(
        w != site and w in facts.alive and w not in policy.drained_sites and w not in policy.canary
        for w in topology.workers
    )


def _why_not(site: str, policy: AdminPolicy, facts: Facts) -> str:
    if site in policy.drained_sites:
        return f"{site} is drained"
    if site in policy.canary:
        n = policy.canary[site]
        return f"{site} is limited to a canary of {n} shard(s) per component"
    if site not in facts.alive:
        return f"{site} is not alive (no fresh lease)"
    return f"{site} is alive"


def _change(
    store: CoordinationStore,
    action: str,
    edit: Callable[[AdminPolicy, Facts], AdminPolicy],
    topology: Topology,
    clock: Clock,
    changed_by: str,
    reason: str,
    attempts: int,
    audit: AuditTrail | None,
    *,
    unchanged: str,
) -> PolicyChange:
    """``_write_policy``, and with ``audit`` its outcome (done, unchanged or refused) as
    one audit record (AuditError, after the change, when the record cannot be written)."""
    kind = action.split(" ", 1)[0]
    try:
        change = _write_policy(
            store, action, edit, topology, clock, changed_by, reason, attempts, unchanged
        )
    except Refused as err:
        if audit is not None:
            audit.record(kind, f"{action}: refused: {err}", why=reason, outcome=Outcome.REFUSED)
        raise
    if audit is not None:
        audit.record(
            kind,
            f"{action}: {change.summary}",
            why=reason,
            before=change.before.to_doc(),
            after=change.after.to_doc(),
            outcome=Outcome.DONE if change.changed else Outcome.UNCHANGED,
        )
    return change


def _write_policy(
    store: CoordinationStore,
    action: str,
    edit: Callable[[AdminPolicy, Facts], AdminPolicy],
    topology: Topology,
    clock: Clock,
    changed_by: str,
    reason: str,
    attempts: int,
    unchanged: str,
) -> PolicyChange:
    """Read, edit and compare-and-set ``admin/policy``, at most ``attempts`` times."""
    facts = read_facts(store, topology, now_wall_s=clock.wall())
    for _ in range(attempts):
        got = store.get(ADMIN_POLICY_KEY)
        damaged = ""
        before = AdminPolicy()
        if got is not None:
            try:
                before = AdminPolicy.from_doc(got.value)
            except ValueError as err:
                damaged = f"admin/policy revision {got.revision} was damaged ({err})"
        edited = edit(before, facts)
        if edited.same_choices(before) and not damaged:
            return PolicyChange(action, before, before, changed=False, summary=unchanged)
        after = replace(
            edited, changed_by=changed_by, changed_at_wall_s=clock.wall(), reason=reason
        )
        try:
            if got is None:
                store.create(ADMIN_POLICY_KEY, after.to_doc())
            else:
                store.compare_and_set(
                    ADMIN_POLICY_KEY, after.to_doc(), expected_revision=got.revision
                )
        except Conflict:
            continue
        except OutcomeUnknown:
            # The write may have landed: if the document is ours now, it did.
            check = store.get(ADMIN_POLICY_KEY)
            if check is None or dict(check.value) != after.to_doc():
                continue
        summary = _describe(action, before, after)
        _record_change(store, action, after, summary)
        return PolicyChange(action, before, after, True, summary, damaged)
    raise Conflict(
        f"admin/policy changed under us {attempts} times in a row (another operator at "
        "work?); look at 'bfm status' and try again"
    )


def _describe(action: str, before: AdminPolicy, after: AdminPolicy) -> str:
    parts = []
    sites = {*before.drained_sites, *after.drained_sites, *before.canary, *after.canary}
    for site in sorted(sites):
        was_drained, now_drained = site in before.drained_sites, site in after.drained_sites
        had, has = before.canary.get(site), after.canary.get(site)
        if now_drained and not was_drained:
            parts.append(f"site {site} drained")
        elif was_drained and not now_drained:
            canary = f" to a canary of {has} shard(s) per component" if has else ""
            parts.append(f"site {site} undrained{canary}")
        elif has is not None and had != has:
            parts.append(f"site {site} limited to a canary of {has} shard(s) per component")
        elif had is not None and has is None:
            parts.append(f"site {site} undrained fully (canary of {had} lifted)")
    for component in sorted(set(before.pinned) | set(after.pinned)):
        was, now = before.pinned.get(component), after.pinned.get(component)
        if was != now:
            parts.append(f"{component} pinned to {now}" if now else f"{component} unpinned")
    return ", ".join(parts) or f"{action}: admin/policy rewritten"


def _record_change(store: CoordinationStore, action: str, after: AdminPolicy, summary: str) -> None:
    """Append the operator's change to the history; the change stands if this fails."""
    reason = f"{action} by {after.changed_by}: {summary}"
    if after.reason:
        reason += f" ({after.reason})"
    event = Event(
        at_wall_s=after.changed_at_wall_s,
        kind=ADMIN_EVENT_KIND,
        reason=reason,
        leader=after.changed_by,
    )
    with contextlib.suppress(StoreError):
        EventLog(store).append(event)


def read_facts(store: CoordinationStore, topology: Topology, *, now_wall_s: float) -> Facts:
    """Alive: a parseable lease renewed within its duration (by the wall clocks)."""
    alive, ups = set(), {}
    for site in topology.workers:
        got = store.get(lease_key(site))
        try:
            record = LeaseRecord.from_doc(got.value) if got is not None else None
        except ValueError:
            record = None
        if record is None:
            continue
        if now_wall_s - record.renewed_at_wall_s <= record.lease_duration_s:
            alive.add(site)
            ups[site] = frozenset(record.components_up)
    return Facts(frozenset(alive), ups)


# -- what happens next ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outlook:
    """The placement the controller heads for under a policy, from the ownership now."""

    moves: Mapping[tuple[str, str], int]  # (from site or "-", to site) -> shards
    stuck: Mapping[str, str]  # component -> why it cannot move now
    batch_size: int
    canary: Mapping[str, int] = field(default_factory=dict)  # site -> its limit per component

    def sentence(self) -> str:
        limits = ", ".join(
            f"{site} holds at most {n} shard(s) per component (canary)"
            for site, n in sorted(self.canary.items())
        )
        if not self.moves and not self.stuck:
            text = "nothing moves: the placement already fits"
            return f"{text}; {limits}" if limits else text
        parts = [
            f"{n} shard(s) move {src} -> {dst}" for (src, dst), n in sorted(self.moves.items())
        ]
        text = ", ".join(parts)
        if parts:
            text += f", in batches of {self.batch_size} per component (drain, then transfer)"
        if limits:
            text = f"{text}; {limits}" if text else limits
        if self.stuck:
            stuck = "; ".join(f"{c}: {why}" for c, why in sorted(self.stuck.items()))
            text = f"{text}; waiting: {stuck}" if text else f"waiting: {stuck}"
        return text


def outlook(
    store: CoordinationStore,
    admin: AdminPolicy,
    *,
    topology: Topology,
    clock: Clock,
    base: PlacementPolicy | None = None,
) -> Outlook:
    """Which shards the controller will move under ``admin``, judged from the store now.

    The target per component is the even split over the sites that may hold it (alive,
    running it, not drained, the pin if any), a canary site holding at most its limit,
    keeping as many shards in place as allowed, as the controller computes it. Timing
    (hold-offs) is not judged here.
    """
    base = base or PlacementPolicy()
    drained, policy, _ = effective_policy(admin, topology, base)
    facts = read_facts(store, topology, now_wall_s=clock.wall())
    weights = {w: topology.weight(w) for w in topology.workers}
    moves: dict[tuple[str, str], int] = {}
    stuck: dict[str, str] = {}
    for c in topology.components:
        got = store.get(ownership_key(c))
        if got is None:
            continue
        try:
            owners: Sequence[str | None] = [a.owner for a in Ownership.from_doc(got.value).shards]
        except ValueError:
            stuck[c] = "its ownership document is damaged"
            continue
        pin = policy.pinned.get(c)
        sites = [
            w
            for w in topology.workers
            if w in facts.alive
            and c in facts.components_up.get(w, frozenset())
            and w not in drained
            and (pin is None or pin == w)
        ]
        if not sites:
            if any(o in drained or (pin is not None and o != pin) for o in owners):
                stuck[c] = "no site may take it now, so it stays where it is"
            continue
        target = target_owners(owners, sites, weights, caps=policy.caps)
        for i, dst in moves_to(owners, target).items():
            key = (owners[i] or "-", dst)
            moves[key] = moves.get(key, 0) + 1
        if all(w in policy.caps for w in sites) and above_caps(target, policy.caps):
            stuck[c] = (
                "no site without a canary limit may take it now, so the canary site holds "
                "more than its limit"
            )
    canary = {s: n for s, n in policy.caps.items() if s not in drained}
    return Outlook(moves, stuck, base.handback_batch_size, canary)
