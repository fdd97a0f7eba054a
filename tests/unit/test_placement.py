"""Shard placement: weighted quotas, minimal even targets, failover, hand-back, drain."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.placement import (
    drain_moves,
    fitted_quotas,
    handback_batch,
    is_even,
    moves_to,
    place_orphans,
    quotas,
    switchover_moves,
    target_owners,
)

ALL_SITES = ("a", "b", "c")


@st.composite
def site_weights(draw: st.DrawFn) -> tuple[list[str], dict[str, float]]:
    n = draw(st.integers(min_value=1, max_value=3))
    sites = list(ALL_SITES[:n])
    weights = {s: draw(st.floats(min_value=0.1, max_value=10)) for s in sites}
    return sites, weights


@st.composite
def placements(draw: st.DrawFn) -> tuple[list[str | None], list[str], dict[str, float]]:
    """Owners drawn from the eligible sites, one ineligible site ``x`` and None."""
    sites, weights = draw(site_weights())
    count = draw(st.integers(min_value=1, max_value=64))
    owners = draw(st.lists(st.sampled_from([*sites, "x", None]), min_size=count, max_size=count))
    return owners, sites, weights


def _apply(owners: list[str | None], moves: dict[int, str]) -> list[str | None]:
    return [moves.get(i, o) for i, o in enumerate(owners)]


def _even_counts(
    shard_count: int, sites: list[str], weights: dict[str, float]
) -> list[dict[str, int]]:
    """Every per-site count vector that ``is_even`` accepts (by brute force over floor/ceil)."""
    total = sum(weights[s] for s in sites)
    share = {s: shard_count * weights[s] / total for s in sites}
    options = [sorted({math.floor(share[s]), math.ceil(share[s])}) for s in sites]
    return [
        dict(zip(sites, combo, strict=True))
        for combo in itertools.product(*options)
        if sum(combo) == shard_count
        and all(abs(c - share[s]) < 1 for s, c in zip(sites, combo, strict=True))
    ]


def _minimal_moves(owners: list[str | None], sites: list[str], weights: dict[str, float]) -> int:
    """The fewest moves of any even placement: an oracle independent of placement.py."""
    counts = Counter(owners)
    ineligible = sum(1 for o in owners if o not in sites)
    return ineligible + min(
        sum(max(0, counts[s] - q[s]) for s in sites)
        for q in _even_counts(len(owners), sites, weights)
    )


# --- quotas ----------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=64), site_weights())
@settings(max_examples=100)
def test_quotas_sum_to_the_shard_count_and_stay_within_one_of_the_share(
    shard_count: int, sw: tuple[list[str], dict[str, float]]
) -> None:
    sites, weights = sw
    quota = quotas(shard_count, sites, weights)
    assert list(quota) == sites
    assert sum(quota.values()) == shard_count
    total = sum(weights.values())
    for s in sites:
        share = shard_count * weights[s] / total
        assert quota[s] >= 0
        assert abs(quota[s] - share) < 1


def test_quotas_examples() -> None:
    assert quotas(16, ["a", "b"], {"a": 1.0, "b": 1.0}) == {"a": 8, "b": 8}
    assert quotas(5, ["a", "b"], {"a": 1.0, "b": 1.0}) == {"a": 3, "b": 2}  # tie: earlier
    assert quotas(5, ["b", "a"], {"a": 1.0, "b": 1.0}) == {"b": 3, "a": 2}
    assert quotas(16, ["a", "b"], {"a": 1.0, "b": 3.0}) == {"a": 4, "b": 12}
    assert quotas(10, ["a", "b", "c"], {"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 4, "b": 3, "c": 3}
    assert quotas(7, ["a", "b"], {}) == {"a": 4, "b": 3}  # missing weights count as 1
    assert quotas(3, [], {}) == {}


def test_quotas_with_no_positive_weight_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="site weights must be positive"):
        quotas(4, ["a", "b"], {"a": 0.0, "b": 0.0})


# --- is_even / target_owners -----------------------------------------------------------


def test_is_even_examples() -> None:
    w = {"a": 1.0, "b": 1.0}
    assert is_even(["a", "b", "a", "b"], ["a", "b"], w)
    assert is_even(["a", "a", "b"], ["a", "b"], w)
    assert is_even(["a", "b", "b"], ["a", "b"], w)
    assert not is_even(["a", "a", "a", "b"], ["a", "b"], w)
    assert not is_even(["a", None], ["a", "b"], w)
    assert not is_even(["a", "c"], ["a", "b"], w)


# --- fitted_quotas ---------------------------------------------------------------------


@given(placements())
@settings(max_examples=100)
def test_fitted_quotas_are_an_even_split_as_close_to_the_owners_as_allowed(
    case: tuple[list[str | None], list[str], dict[str, float]],
) -> None:
    owners, sites, weights = case
    quota = fitted_quotas(owners, sites, weights)
    assert list(quota) == sites
    assert quota in _even_counts(len(owners), sites, weights)
    counts = Counter(owners)
    kept = sum(min(counts[s], quota[s]) for s in sites)
    assert kept == max(
        sum(min(counts[s], q[s]) for s in sites) for q in _even_counts(len(owners), sites, weights)
    )


def test_fitted_quotas_examples() -> None:
    w = {"a": 1.0, "b": 1.0}
    # 5 over a, b: 2.5 each; the extra shard stays with the site that holds it
    assert fitted_quotas(["a", "a", "b", "b", "b"], ["a", "b"], w) == {"a": 2, "b": 3}
    assert fitted_quotas(["a", "a", "a", "b", "b"], ["a", "b"], w) == {"a": 3, "b": 2}
    # nobody holds more than the floor: the largest remainder, ties to the earlier site
    assert fitted_quotas([None] * 5, ["a", "b"], w) == {"a": 3, "b": 2}
    assert fitted_quotas([None] * 5, ["b", "a"], w) == {"b": 3, "a": 2}
    assert fitted_quotas(["b", "b"], ["a", "b"], {"a": 1.0, "b": 3.0}) == {"a": 0, "b": 2}
    assert fitted_quotas(["a", "a"], ["a", "b"], {"a": 1.0, "b": 3.0}) == {"a": 1, "b": 1}
    # an exact share is never rounded up, whoever holds what
    assert fitted_quotas(["a"] * 16, ["a", "b"], w) == {"a": 8, "b": 8}
    assert fitted_quotas(["a", "x", None], ["a"], {}) == {"a": 3}
    assert fitted_quotas(["a"], [], {}) == {}


def test_fitted_quotas_with_no_positive_weight_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="site weights must be positive"):
        fitted_quotas(["a", "b"], ["a", "b"], {"a": 0.0, "b": 0.0})


@given(placements())
@settings(max_examples=100)
def test_target_owners_is_even_and_minimal(
    case: tuple[list[str | None], list[str], dict[str, float]],
) -> None:
    owners, sites, weights = case
    target = target_owners(owners, sites, weights)
    assert len(target) == len(owners)
    assert is_even(target, sites, weights)
    quota = fitted_quotas(owners, sites, weights)
    assert Counter(target) == Counter({s: q for s, q in quota.items() if q})
    moves = moves_to(owners, target)
    assert len(moves) == _minimal_moves(owners, sites, weights)
    # no shard on a site that is not over its quota moves
    counts = Counter(owners)
    for i in moves:
        owner = owners[i]
        assert owner not in sites or counts[owner] > quota[owner]


@given(placements(), st.randoms(use_true_random=False))
@settings(max_examples=60)
def test_an_even_placement_is_its_own_target(
    case: tuple[list[str | None], list[str], dict[str, float]], rng: random.Random
) -> None:
    owners, sites, weights = case
    even: list[str | None] = list(target_owners(owners, sites, weights))
    rng.shuffle(even)
    assert is_even(even, sites, weights)
    assert target_owners(even, sites, weights) == even
    assert handback_batch(even, sites, weights, batch_size=4) == {}


def test_target_owners_keeps_the_earliest_shards_of_an_over_quota_site() -> None:
    w = {"a": 1.0, "b": 1.0}
    assert target_owners(["a", "a", "a", "a"], ["a", "b"], w) == ["a", "a", "b", "b"]
    assert target_owners([None, "x", "b", "b"], ["a", "b"], w) == ["a", "a", "b", "b"]


def test_target_owners_needs_a_site() -> None:
    with pytest.raises(ValueError, match=r"^no site to place shards on$"):
        target_owners(["a"], [], {})


# Used to fail: a tied share moved shard 4 of [a,a,b,b,b] to a, a needless drain.
@pytest.mark.parametrize(
    ("owners", "weights"),
    [
        (["a", "a", "b", "b", "b"], {"a": 1.0, "b": 1.0}),
        (["b", "b"], {"a": 1.0, "b": 3.0}),
        (["a", "b"], {"a": 1.0, "b": 3.0}),
        (["b", "a", "b", "a", "b"], {"a": 1.0, "b": 1.0}),
    ],
)
def test_an_even_placement_needs_no_moves(
    owners: list[str | None], weights: dict[str, float]
) -> None:
    assert is_even(owners, ["a", "b"], weights)
    assert target_owners(owners, ["a", "b"], weights) == owners
    assert handback_batch(owners, ["a", "b"], weights, batch_size=4) == {}


# --- place_orphans ---------------------------------------------------------------------


@given(placements(), st.data())
@settings(max_examples=60)
def test_place_orphans_moves_exactly_the_orphans(
    case: tuple[list[str | None], list[str], dict[str, float]], data: st.DataObject
) -> None:
    owners, sites, weights = case
    orphans = data.draw(st.lists(st.sampled_from(range(len(owners))), unique=True))
    moves = place_orphans(owners, orphans, sites, weights)
    assert set(moves) == set(orphans)
    assert all(site in sites for site in moves.values())


def test_place_orphans_fills_the_site_furthest_below_its_quota_first() -> None:
    w = {"a": 1.0, "b": 1.0}
    owners = ["a", "a", "a", "b", None, None, None, None]
    assert place_orphans(owners, [4, 5, 6, 7], ["a", "b"], w) == {4: "b", 5: "b", 6: "a", 7: "b"}


def test_place_orphans_goes_by_quota_not_by_weighted_count() -> None:
    # 4 shards over a, b, c weighted 1, 1, 5: shares 0.57, 0.57, 2.86, so quotas 1, 0, 3.
    # Filling by (count + 1) / weight alone would put all four on c.
    w = {"a": 1.0, "b": 1.0, "c": 5.0}
    moves = place_orphans([None] * 4, [0, 1, 2, 3], ["a", "b", "c"], w)
    assert moves == {0: "c", 1: "c", 2: "c", 3: "a"}


def test_place_orphans_never_takes_a_site_already_over_its_quota() -> None:
    w = {"a": 1.0, "b": 1.0}
    owners: list[str | None] = ["a"] * 6 + [None, None]  # quotas 4/4: a is 2 over
    assert place_orphans(owners, [6, 7], ["a", "b"], w) == {6: "b", 7: "b"}


@given(placements(), st.data())
@settings(max_examples=60)
def test_place_orphans_fills_up_to_the_quota_and_never_past_it(
    case: tuple[list[str | None], list[str], dict[str, float]], data: st.DataObject
) -> None:
    owners, sites, weights = case
    orphans = data.draw(st.lists(st.sampled_from(range(len(owners))), unique=True))
    staying = [None if i in orphans or o not in sites else o for i, o in enumerate(owners)]
    quota = fitted_quotas(staying, sites, weights)
    kept = Counter(staying)
    final = Counter(_apply(staying, place_orphans(owners, orphans, sites, weights)))
    for s in sites:
        assert final[s] <= max(kept[s], quota[s])
    all_placed = set(orphans) == {i for i, o in enumerate(staying) if o is None}
    if all_placed and all(kept[s] <= quota[s] for s in sites):
        # every shard not staying is placed and no site was over: exactly the quotas
        assert {s: final[s] for s in sites} == quota
        placed = _apply(owners, place_orphans(owners, orphans, sites, weights))
        assert is_even(placed, sites, weights)


def test_failover_sends_every_shard_of_a_failed_site_to_the_survivor() -> None:
    w = {"a": 1.0, "b": 1.0}
    owners = ["a", "b"] * 8
    orphans = [i for i, o in enumerate(owners) if o == "a"]
    moves = place_orphans(owners, orphans, ["b"], w)
    assert moves == dict.fromkeys(orphans, "b")
    assert _apply(owners, moves) == ["b"] * 16


@given(st.integers(1, 64), site_weights())
@settings(max_examples=60)
def test_placing_an_unowned_component_on_one_to_three_sites_is_even(
    shard_count: int, sw: tuple[list[str], dict[str, float]]
) -> None:
    sites, weights = sw
    owners: list[str | None] = [None] * shard_count
    moves = place_orphans(owners, list(range(shard_count)), sites, weights)
    assert is_even(_apply(owners, moves), sites, weights)


def test_placing_an_unowned_component_on_three_sites_is_even() -> None:
    # Used to fail: all 4 shards went to c.
    sites = ["a", "b", "c"]
    weights = {"a": 1.0, "b": 1.0, "c": 5.0}
    owners: list[str | None] = [None] * 4
    moves = place_orphans(owners, [0, 1, 2, 3], sites, weights)
    assert is_even(_apply(owners, moves), sites, weights)


def test_place_orphans_with_nothing_to_do() -> None:
    assert place_orphans(["a", None], [], ["a"], {}) == {}
    assert place_orphans(["a", None], [1], [], {}) == {}


# --- handback_batch --------------------------------------------------------------------


@given(placements(), st.integers(min_value=1, max_value=10))
@settings(max_examples=80)
def test_handback_converges_in_ceil_moves_over_batch_steps_without_oscillating(
    case: tuple[list[str | None], list[str], dict[str, float]], batch_size: int
) -> None:
    owners, sites, weights = case
    total = len(moves_to(owners, target_owners(owners, sites, weights)))
    moved: set[int] = set()
    steps = 0
    while batch := handback_batch(owners, sites, weights, batch_size=batch_size):
        assert len(batch) <= batch_size
        assert all(owners[i] != site and site in sites for i, site in batch.items())
        assert not moved & set(batch), "a shard moved twice: the hand-back oscillates"
        moved |= set(batch)
        owners = _apply(owners, batch)
        steps += 1
        assert steps <= math.ceil(total / batch_size)
    assert steps == math.ceil(total / batch_size)
    assert len(moved) == total
    assert is_even(owners, sites, weights)


def test_handback_batch_moves_at_most_batch_size() -> None:
    w = {"a": 1.0, "b": 1.0}
    owners: list[str | None] = ["b"] * 16
    batch = handback_batch(owners, ["a", "b"], w, batch_size=3)
    assert batch == {8: "a", 9: "a", 10: "a"}


def test_handback_batch_of_an_even_placement_is_empty() -> None:
    w = {"a": 1.0, "b": 1.0}
    assert handback_batch(["a", "b"] * 8, ["a", "b"], w, batch_size=4) == {}


@pytest.mark.parametrize("batch_size", [0, -1])
def test_handback_batch_size_must_be_positive(batch_size: int) -> None:
    with pytest.raises(ValueError, match=f"^batch_size must be >= 1, got {batch_size}$"):
        handback_batch(["a"], ["a"], {}, batch_size=batch_size)


def test_handback_batch_takes_from_the_most_over_quota_site_first() -> None:
    # Used to take moves in shard-index order.
    w = {"a": 1.0, "b": 1.0, "c": 1.0}
    owners: list[str | None] = ["a"] * 5 + ["c"] * 7  # quotas 4/4/4: a +1, c +3, b -4
    sites = ["a", "b", "c"]
    assert handback_batch(owners, sites, w, batch_size=1) == {9: "b"}
    assert handback_batch(owners, sites, w, batch_size=2) == {9: "b", 10: "b"}
    # c is down to +1 like a: the tie goes to the lower shard index
    assert handback_batch(owners, sites, w, batch_size=3) == {4: "b", 9: "b", 10: "b"}
    assert handback_batch(owners, sites, w, batch_size=4) == {4: "b", 9: "b", 10: "b", 11: "b"}


def test_handback_batch_moves_shards_off_ineligible_sites_first() -> None:
    w = {"a": 1.0, "b": 1.0}
    owners: list[str | None] = ["a"] * 5 + ["x", None, "b"]  # quotas 4/4: a +1
    assert handback_batch(owners, ["a", "b"], w, batch_size=2) == {5: "b", 6: "b"}
    assert handback_batch(owners, ["a", "b"], w, batch_size=3) == {4: "b", 5: "b", 6: "b"}


@given(placements())
@settings(max_examples=60)
def test_handback_one_at_a_time_always_takes_from_the_most_over_quota_site(
    case: tuple[list[str | None], list[str], dict[str, float]],
) -> None:
    owners, sites, weights = case
    while batch := handback_batch(owners, sites, weights, batch_size=1):
        ((index, _),) = batch.items()
        off_sites = [i for i, o in enumerate(owners) if o not in sites]
        if off_sites:
            assert index in off_sites
        else:
            quota = fitted_quotas(owners, sites, weights)
            counts = Counter(owners)
            excess = {s: counts[s] - quota[s] for s in sites}
            assert excess[str(owners[index])] == max(excess.values()) > 0
        owners = _apply(owners, batch)
    assert is_even(owners, sites, weights)


# --- drain and switchover --------------------------------------------------------------


@given(placements())
@settings(max_examples=50)
def test_drain_moves_empty_the_site_and_touch_nothing_else(
    case: tuple[list[str | None], list[str], dict[str, float]],
) -> None:
    owners, sites, weights = case
    drained, others = sites[0], [*sites[1:], "d"]
    weights = {**weights, "d": 1.0}
    moves = drain_moves(owners, drained, others, weights)
    assert set(moves) == {i for i, o in enumerate(owners) if o == drained}
    assert all(site in others for site in moves.values())
    assert drained not in _apply(owners, moves)


def test_drain_of_a_site_with_no_other_site_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^cannot drain site 'a': no other site to take its"):
        drain_moves(["a", "b"], "a", [], {})


def test_drain_onto_only_itself_is_a_value_error() -> None:
    # Used to return {} (the site not emptied).
    with pytest.raises(
        ValueError, match=r"^cannot drain site 'a': no other site to take its shards$"
    ):
        drain_moves(["a", "a"], "a", ["a"], {})
    with pytest.raises(ValueError, match=r"^cannot drain site 'a'"):
        drain_moves(["b", "b"], "a", ["a", "a"], {})  # even with nothing to move


def test_drain_moves_ignore_the_drained_site_in_others() -> None:
    w = {"a": 1.0, "b": 1.0}
    assert drain_moves(["a", "b", "a"], "a", ["a", "b"], w) == {0: "b", 2: "b"}


@given(placements(), st.sampled_from(ALL_SITES))
@settings(max_examples=40)
def test_switchover_puts_every_shard_on_one_site(
    case: tuple[list[str | None], list[str], dict[str, float]], to_site: str
) -> None:
    owners, _, _ = case
    moves = switchover_moves(owners, to_site)
    assert set(moves) == {i for i, o in enumerate(owners) if o != to_site}
    assert _apply(owners, moves) == [to_site] * len(owners)
