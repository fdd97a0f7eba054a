"""The rolling-update plan: one worker site at a time, drained while it changes.

For each worker site with anything to change, in turn (``first_site`` first)::

    precheck -> drain -> site-level steps (os, cluster) -> components, modules first and
    backbone last -> canary (a share of shards back) -> gate (soak) -> undrain -> rebalance

The witness's control-plane steps come before both worker sites, after their own
precheck, while both worker sites serve (see ``plan_update``). docs/updates.md explains
each choice; ``StepKind`` says what "already done" looks like for each kind, so the
runtime can re-run the current step safely after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from failover.core.placement import quotas
from failover.core.topology import Topology
from failover.core.update_manifest import Release, SiteStep, SiteStepKind
from failover.core.update_steps import (
    BACKBONE,
    Plan,
    Purpose,
    Step,
    StepKind,
    recovery_steps,
    update_component_step,
)

Versions = Mapping[str, Mapping[str, str]]  # site -> component or site item key -> version


class PlanError(ValueError):
    """The inputs cannot make a plan (a site's versions unknown, a bad option)."""


def component_order(topology: Topology) -> tuple[str, ...]:
    """The order a site's components are updated in: the modules, then the backbone.

    Modules are the readers of the envelopes the backbone's router writes. Updating the
    readers before the writer keeps every local delivery at a site "new reads old" or
    "same reads same" at every point, also halfway through, in a rollback (the reverse
    order: backbone first) and after an abort. That matters because a drained site is
    still the controller's last resort: if the serving site fails mid-update, the drained
    one takes all work as it is. Old reads new is only asked of the cross-site paths once
    the canary starts, which any order has (docs/updates.md).
    """
    modules = tuple(c for c in topology.components if c != BACKBONE)
    return modules + ((BACKBONE,) if BACKBONE in topology.components else ())


def plan_update(
    current: Versions,
    release: Release,
    topology: Topology,
    *,
    canary_share: float = 0.25,
    soak_s: float = 30.0,
    first_site: str = "a",
) -> Plan:
    """The steps that bring every site from ``current`` to ``release``, one site at a time.

    ``current[site]`` maps every component of each worker site (and each site item key,
    such as ``os:debian``, that the runtime knows) to its running version. Items already at
    the release's version are skipped; a site with nothing to change is not drained at
    all, and a release that changes nothing gives an empty plan. ``canary_share`` is the
    fraction of the site's even share of shards it takes back before the gate.

    The witness's steps run first, while both worker sites serve: a witness restart leaves
    two of three sites, and a worker site drained or rebooting at the same time would leave
    one serving site without a tie-breaker (or, while it reboots, no majority at all).
    Control plane before workers is also Kubernetes' version-skew order.
    """
    if not 0 < canary_share <= 1:
        raise PlanError(f"canary_share must be in (0, 1], got {canary_share!r}")
    if not (math.isfinite(soak_s) and soak_s >= 0):
        raise PlanError(f"soak_s must be a number of seconds >= 0, got {soak_s!r}")
    if not topology.is_worker(first_site):
        raise PlanError(
            f"first_site {first_site!r} is not a worker site; choose one of "
            f"{', '.join(topology.workers)}"
        )
    if len(topology.workers) < 2:
        raise PlanError(
            "a rolling update needs two worker sites: one serves while the other is drained"
        )
    _check_current(current, topology)
    for component in topology.components:
        if component not in release.components:
            raise PlanError(f"the release has no version for component {component!r}")
    steps: list[Step] = []
    for witness in topology.witnesses:
        items = _pending_items(current, release, witness)
        if items:
            steps.append(_precheck(witness, topology))
            steps.extend(_site_item_step(witness, item, current, witness=True) for item in items)
    workers = (first_site, *(w for w in topology.workers if w != first_site))
    for site in workers:
        steps.extend(_site_steps(site, current, release, topology, canary_share, soak_s))
    return Plan(release.version, tuple(steps))


def canary_shards(topology: Topology, site: str, canary_share: float) -> int:
    """Shards per component a site takes back as its canary: at least one, at most its share."""
    weights = {w: topology.weight(w) for w in topology.workers}
    share = quotas(topology.shards_per_component, list(topology.workers), weights)[site]
    return max(1, min(share, math.ceil(canary_share * share)))


def _site_steps(
    site: str,
    current: Versions,
    release: Release,
    topology: Topology,
    canary_share: float,
    soak_s: float,
) -> list[Step]:
    now = current[site]
    components = [c for c in component_order(topology) if now[c] != release.components[c]]
    items = _pending_items(current, release, site)
    if not components and not items:
        return []
    others = ", ".join(w for w in topology.workers if w != site)
    steps = [
        _precheck(site, topology),
        Step(
            StepKind.DRAIN,
            site,
            explanation=(
                f"drain {site}: its shards move to {others} batch by batch (drain, acknowledge, "
                f"transfer under a new epoch); {others} serves all work while {site} changes"
            ),
        ),
    ]
    steps.extend(_site_item_step(site, item, current, witness=False) for item in items)
    steps.extend(update_component_step(site, c, now[c], release.components[c]) for c in components)
    shards = canary_shards(topology, site, canary_share)
    steps += [
        Step(
            StepKind.CANARY,
            site,
            shards=shards,
            explanation=(
                f"canary: {site} takes back {shards} shard(s) of each component, so live "
                "traffic passes its new versions, including cross-site deliveries"
            ),
        ),
        Step(
            StepKind.GATE,
            site,
            soak_s=soak_s,
            explanation=(
                f"gate: {site}'s components stay ready, with error ratio and p99 latency "
                f"within bounds, for {soak_s:g} s; a failure rolls {site} back"
            ),
        ),
        *recovery_steps(site, others, Purpose.UPDATE),
    ]
    return steps


def _precheck(site: str, topology: Topology) -> Step:
    return Step(
        StepKind.PRECHECK,
        site,
        explanation=(
            f"precheck before {site}: every site ({', '.join(topology.site_names)}) up, no "
            "failover or hand-back running, nothing drained or pinned, placement even"
        ),
    )


def _site_item_step(site: str, item: SiteStep, current: Versions, *, witness: bool) -> Step:
    kind = StepKind.UPDATE_OS if item.kind is SiteStepKind.OS else StepKind.UPDATE_CLUSTER
    before = current.get(site, {}).get(item.key)
    effect = (
        "the whole site goes down and comes back up"
        if item.kind is SiteStepKind.OS
        else "the site's cluster components restart"
    )
    where = "while both worker sites serve" if witness else "while drained, before its components"
    return Step(
        kind,
        site,
        target=item.key,
        from_version=before,
        to_version=item.version,
        explanation=(
            f"{item.kind.value} {item.name} at {site}: {before or '?'} -> {item.version}; "
            f"{effect}, {where}; cannot be rolled back"
        ),
    )


def _pending_items(current: Versions, release: Release, site: str) -> list[SiteStep]:
    now = current.get(site, {})
    return [s for s in release.site_steps.get(site, ()) if now.get(s.key) != s.version]


def _check_current(current: Versions, topology: Topology) -> None:
    problems: list[str] = []
    for site in current:
        if site not in topology.site_names:
            problems.append(f"unknown site {site!r} (known: {', '.join(topology.site_names)})")
    for site in topology.workers:
        versions = current.get(site)
        if versions is None:
            problems.append(f"site {site} is missing")
            continue
        missing = [c for c in topology.components if c not in versions]
        if missing:
            problems.append(f"site {site} lacks {', '.join(missing)}")
    for site, versions in current.items():
        for name, version in versions.items():
            if not isinstance(version, str) or not version:
                problems.append(f"{site}/{name} has version {version!r}, not a version string")
    if problems:
        raise PlanError(
            "the current versions cannot be planned from: "
            + "; ".join(problems)
            + "; every worker site must report the version of every component"
        )
