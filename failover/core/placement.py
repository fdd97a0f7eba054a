"""Shard placement: even split by weight, all-to-survivor, batched hand-back, drain, switchover.

Functions work on one component's owner list (site name or None per shard) and return
*moves* (shard index -> new site), changing as few shards as possible. They never decide
whether a move is safe: the controller moves a live owner's shard only through a drain.

*Caps* (site -> most shards it may hold, a canary's partial undrain) hold a site below its
even share: what it may not take goes to the uncapped sites. Only when none of the sites
is uncapped are the caps lifted, so every shard always has a site to go to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Owners = Sequence[str | None]
Caps = Mapping[str, int]
NO_CAPS: Caps = {}


def quotas(shard_count: int, sites: Sequence[str], weights: Mapping[str, float]) -> dict[str, int]:
    """Whole-shard quotas by weight (largest remainder; ties to the earlier site).

    Each quota is within 1 of the site's exact weighted share.
    """
    if not sites:
        return {}
    total = sum(weights.get(s, 1.0) for s in sites)
    if total <= 0:
        raise ValueError(f"site weights must be positive, got {dict(weights)}")
    exact = {s: shard_count * weights.get(s, 1.0) / total for s in sites}
    result = {s: int(exact[s]) for s in sites}
    left = shard_count - sum(result.values())
    order = sorted(sites, key=lambda s: (-(exact[s] - result[s]), sites.index(s)))
    for s in order[:left]:
        result[s] += 1
    return result


def fitted_quotas(
    owners: Owners, sites: Sequence[str], weights: Mapping[str, float]
) -> dict[str, int]:
    """Whole-shard quotas within 1 of each exact share, as close to ``owners`` as allowed.

    Every site gets the floor of its exact share; the shards left over go, one each, to
    sites whose share is fractional, preferring those that already hold more than their
    floor. So a placement that is already even (``is_even``) is its own target.
    """
    return _fitted(len(owners), owners, sites, weights)


def _fitted(
    shard_count: int, owners: Owners, sites: Sequence[str], weights: Mapping[str, float]
) -> dict[str, int]:
    if not sites:
        return {}
    total = sum(weights.get(s, 1.0) for s in sites)
    if not total > 0:
        raise ValueError(f"site weights must be positive, got {dict(weights)}")
    exact = {s: shard_count * weights.get(s, 1.0) / total for s in sites}
    result = {s: int(exact[s]) for s in sites}
    left = shard_count - sum(result.values())
    held = {s: sum(1 for o in owners if o == s) for s in sites}
    fractional = [s for s in sites if exact[s] > result[s]]
    order = sorted(
        fractional,
        key=lambda s: (-(held[s] > result[s]), -(exact[s] - result[s]), sites.index(s)),
    )
    for s in order[:left]:
        result[s] += 1
    return result


def capped_quotas(
    owners: Owners, sites: Sequence[str], weights: Mapping[str, float], caps: Caps = NO_CAPS
) -> dict[str, int]:
    """``fitted_quotas`` with every capped site held at or below its cap.

    A capped site whose exact share is above its cap gets exactly its cap, and the rest is
    shared out again over the other sites (which may push another capped site over its
    cap: repeat). Which sites end at their cap depends on the weights alone, not on
    ``owners``, so a placement that fits the quotas is its own target. When every site is
    capped the caps are lifted (plain ``fitted_quotas``): a shard never stays without a
    site because of a cap.
    """
    capped = {s: caps[s] for s in sites if s in caps}
    if not capped:
        return fitted_quotas(owners, sites, weights)
    for s, cap in capped.items():
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"the cap of site {s!r} must be an integer >= 0, got {cap!r}")
    if all(s in capped for s in sites):
        return fitted_quotas(owners, sites, weights)
    fixed: dict[str, int] = {}
    while True:
        free = [s for s in sites if s not in fixed]
        left = len(owners) - sum(fixed.values())
        total = sum(weights.get(s, 1.0) for s in free)
        if not total > 0:
            raise ValueError(f"site weights must be positive, got {dict(weights)}")
        over = [s for s in free if s in capped and left * weights.get(s, 1.0) / total > capped[s]]
        if not over:
            quota = _fitted(left, owners, free, weights)
            return {s: fixed[s] if s in fixed else quota[s] for s in sites}
        fixed.update((s, capped[s]) for s in over)


def is_even(owners: Owners, sites: Sequence[str], weights: Mapping[str, float]) -> bool:
    """Every shard owned by one of ``sites``, and each site within 1 of its weighted share."""
    if any(o not in sites for o in owners):
        return False
    total = sum(weights.get(s, 1.0) for s in sites)
    for s in sites:
        share = len(owners) * weights.get(s, 1.0) / total
        if abs(sum(1 for o in owners if o == s) - share) >= 1:
            return False
    return True


def target_owners(
    owners: Owners, sites: Sequence[str], weights: Mapping[str, float], *, caps: Caps = NO_CAPS
) -> list[str]:
    """The even placement over ``sites`` (within ``caps``) that keeps the most shards where
    they are; a site above its quota keeps its earliest shards."""
    if not sites:
        raise ValueError("no site to place shards on")
    quota = capped_quotas(owners, sites, weights, caps)
    kept: dict[str, int] = dict.fromkeys(sites, 0)
    result: list[str | None] = []
    for owner in owners:
        if owner in kept and kept[owner] < quota[owner]:
            kept[owner] += 1
            result.append(owner)
        else:
            result.append(None)
    for i, owner in enumerate(result):
        if owner is None:
            site = max(sites, key=lambda s: (quota[s] - kept[s], -sites.index(s)))
            kept[site] += 1
            result[i] = site
    return [o for o in result if o is not None]


def moves_to(owners: Owners, target: Sequence[str]) -> dict[int, str]:
    return {i: t for i, (o, t) in enumerate(zip(owners, target, strict=True)) if o != t}


def above_caps(owners: Owners, caps: Caps) -> list[int]:
    """The shards a capped site holds beyond its cap: its later ones, as ``target_owners``
    keeps a site's earliest shards."""
    held: dict[str, int] = {}
    result = []
    for i, owner in enumerate(owners):
        if owner is None or owner not in caps:
            continue
        held[owner] = held.get(owner, 0) + 1
        if held[owner] > caps[owner]:
            result.append(i)
    return result


def place_orphans(
    owners: Owners,
    orphans: Sequence[int],
    sites: Sequence[str],
    weights: Mapping[str, float],
    *,
    caps: Caps = NO_CAPS,
) -> dict[int, str]:
    """All orphaned shards to ``sites`` at once, the furthest below its quota first.

    Used for failover: every shard of a failed site or component instance goes to the
    survivor(s) in one decision. Shards not in ``orphans`` do not move, so a site may end
    above its quota; the hand-back evens that out later through drains. A capped site gets
    no orphan beyond its cap while an uncapped site is among ``sites`` (its quota is at most
    its cap, and some site stays below its quota while an orphan is left).
    """
    if not sites or not orphans:
        return {}
    lost = set(orphans)
    staying = [o if i not in lost and o in sites else None for i, o in enumerate(owners)]
    counts = {s: sum(1 for o in staying if o == s) for s in sites}
    quota = capped_quotas(staying, sites, weights, caps)
    moves: dict[int, str] = {}
    for i in orphans:
        site = min(
            sites,
            key=lambda s: (
                counts[s] - quota[s],
                (counts[s] + 1) / weights.get(s, 1.0),
                sites.index(s),
            ),
        )
        counts[site] += 1
        moves[i] = site
    return moves


def handback_batch(
    owners: Owners,
    sites: Sequence[str],
    weights: Mapping[str, float],
    *,
    batch_size: int,
    caps: Caps = NO_CAPS,
) -> dict[int, str]:
    """The next bounded batch of moves towards an even placement over ``sites`` (within
    ``caps``).

    Moves are taken from the most over-quota site first so each batch reduces the
    imbalance; an empty result means the placement is already even.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not sites:
        return {}
    all_moves = moves_to(owners, target_owners(owners, sites, weights, caps=caps))
    quota = capped_quotas(owners, sites, weights, caps)
    excess = {
        o: sum(1 for x in owners if x == o) - quota.get(str(o), 0)
        for o in {owners[i] for i in all_moves}
    }
    batch: dict[int, str] = {}
    pending = sorted(all_moves)
    while pending and len(batch) < batch_size:
        # the next move comes from the site furthest over its quota (unowned shards first)
        i = max(
            pending,
            key=lambda j: (owners[j] is None or owners[j] not in sites, excess[owners[j]], -j),
        )
        pending.remove(i)
        excess[owners[i]] -= 1
        batch[i] = all_moves[i]
    return dict(sorted(batch.items()))


def drain_moves(
    owners: Owners, site: str, others: Sequence[str], weights: Mapping[str, float]
) -> dict[int, str]:
    """Everything ``site`` owns, to the other sites (a manual drain of a site)."""
    targets = [s for s in others if s != site]
    if not targets:
        raise ValueError(f"cannot drain site {site!r}: no other site to take its shards")
    orphans = [i for i, o in enumerate(owners) if o == site]
    return place_orphans(owners, orphans, targets, weights)


def switchover_moves(owners: Owners, to_site: str) -> dict[int, str]:
    """Every shard of one component to ``to_site`` (a manual switchover of that component)."""
    return {i: to_site for i, o in enumerate(owners) if o != to_site}
