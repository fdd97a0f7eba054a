"""The simulated network's store reachability and the simulated store's compare-and-set."""

from __future__ import annotations

import pytest

from failover.chaos.sim_world import Net, SimConfig, SimSiteStore, SimStore
from failover.ports import Conflict, StoreUnavailable, Versioned

SITES = ("a", "b", "w")


def _reach(net: Net) -> dict[str, bool]:
    return {s: net.store_ok(s) for s in SITES}


def _cut(net: Net, *links: tuple[str, str]) -> None:
    for link in links:
        net.cuts[link] += 1
    net.changed()


@pytest.fixture
def net() -> Net:
    return Net(SITES)


def test_all_up_everyone_reaches_the_store(net: Net) -> None:
    assert _reach(net) == {"a": True, "b": True, "w": True}
    assert net.store_ok_anywhere()
    assert net.quiet()


def test_store_outage_nobody_reaches_it(net: Net) -> None:
    net.store_outages += 1
    net.changed()

    assert _reach(net) == {"a": False, "b": False, "w": False}
    assert not net.store_ok_anywhere()
    assert net.quiet()  # a store outage is not a network or site fault


def test_partitioned_site_is_cut_off_and_the_others_keep_the_majority(net: Net) -> None:
    _cut(net, ("a", "b"), ("b", "a"), ("a", "w"), ("w", "a"))

    assert _reach(net) == {"a": False, "b": True, "w": True}
    assert not net.quiet()


def test_one_link_cut_both_ways_leaves_everyone_connected_through_the_witness(net: Net) -> None:
    _cut(net, ("a", "b"), ("b", "a"))

    assert _reach(net) == {"a": True, "b": True, "w": True}
    assert not net.both_ways("a", "b")
    assert net.both_ways("a", "w")


def test_a_single_one_way_cut_breaks_that_pair_only(net: Net) -> None:
    _cut(net, ("a", "b"))

    assert not net.link("a", "b")
    assert net.link("b", "a")
    assert _reach(net) == {"a": True, "b": True, "w": True}


def test_one_way_cuts_from_a_to_both_others_cut_a_off(net: Net) -> None:
    _cut(net, ("a", "b"), ("a", "w"))

    assert _reach(net) == {"a": False, "b": True, "w": True}


def test_witness_crashed_and_a_b_cut_leaves_nobody_a_majority(net: Net) -> None:
    net.crashed.add("w")
    _cut(net, ("a", "b"), ("b", "a"))

    assert _reach(net) == {"a": False, "b": False, "w": False}
    assert not net.store_ok_anywhere()


def test_a_crashed_site_does_not_reach_the_store_and_the_other_two_do(net: Net) -> None:
    net.crashed.add("b")
    net.changed()

    assert _reach(net) == {"a": True, "b": False, "w": True}
    assert not net.running("b")


def test_two_crashed_sites_leave_the_third_without_a_majority(net: Net) -> None:
    net.crashed.update({"a", "b"})
    net.changed()

    assert _reach(net) == {"a": False, "b": False, "w": False}


def test_a_hung_site_still_counts_for_the_store_majority(net: Net) -> None:
    # Its store member is another process; only BFM's own processes are paused.
    net.hung.add("w")
    _cut(net, ("a", "b"), ("b", "a"))

    assert _reach(net) == {"a": True, "b": True, "w": True}
    assert not net.running("w")


def test_reachability_is_cached_until_changed(net: Net) -> None:
    assert net.store_ok("a")

    net.cuts[("a", "b")] += 1
    net.cuts[("a", "w")] += 1
    assert net.store_ok("a")  # not told yet: the cached answer stands

    net.changed()
    assert not net.store_ok("a")

    net.cuts[("a", "b")] -= 1
    net.cuts[("a", "w")] -= 1
    net.changed()
    assert net.store_ok("a")
    assert net.quiet()


def test_overlapping_cuts_of_one_link_heal_only_when_both_do(net: Net) -> None:
    _cut(net, ("a", "b"), ("a", "b"))
    net.cuts[("a", "b")] -= 1
    net.changed()

    assert not net.link("a", "b")


# --- the store ----------------------------------------------------------------------------


@pytest.fixture
def store(net: Net) -> SimStore:
    return SimStore(net)


def test_put_with_none_creates_and_get_returns_value_and_revision(store: SimStore) -> None:
    revision = store.put("a", "k", {"v": "v1"}, expected_revision=None)

    assert store.get("a", "k") == Versioned("k", {"v": "v1"}, revision)
    assert store.get("b", "missing") is None


def test_put_with_none_on_an_existing_key_conflicts(store: SimStore) -> None:
    store.put("a", "k", {"v": "v1"}, expected_revision=None)

    with pytest.raises(Conflict):
        store.put("b", "k", {"v": "v2"}, expected_revision=None)
    got = store.get("a", "k")
    assert got is not None
    assert got.value == {"v": "v1"}


def test_put_with_the_current_revision_wins_and_a_stale_one_conflicts(store: SimStore) -> None:
    first = store.put("a", "k", {"v": "v1"}, expected_revision=None)
    second = store.put("b", "k", {"v": "v2"}, expected_revision=first)

    assert second != first
    with pytest.raises(Conflict):
        store.put("a", "k", {"v": "v3"}, expected_revision=first)
    assert store.get("w", "k") == Versioned("k", {"v": "v2"}, second)


def test_revisions_differ_across_keys(store: SimStore) -> None:
    r1 = store.put("a", "k1", {"n": 1}, expected_revision=None)
    r2 = store.put("a", "k2", {"n": 2}, expected_revision=None)

    assert r1 != r2
    with pytest.raises(Conflict):
        store.put("a", "k2", {"n": 3}, expected_revision=r1)


def test_an_unreachable_site_gets_store_unavailable_and_changes_nothing(
    net: Net, store: SimStore
) -> None:
    revision = store.put("a", "k", {"v": "v1"}, expected_revision=None)
    _cut(net, ("a", "b"), ("b", "a"), ("a", "w"), ("w", "a"))

    with pytest.raises(StoreUnavailable, match="from a"):
        store.get("a", "k")
    with pytest.raises(StoreUnavailable):
        store.put("a", "k", {"v": "v2"}, expected_revision=revision)
    assert store.get("b", "k") == Versioned("k", {"v": "v1"}, revision)


def test_a_store_outage_refuses_everyone_including_the_producer(net: Net, store: SimStore) -> None:
    net.store_outages += 1
    net.changed()

    for site in SITES:
        with pytest.raises(StoreUnavailable):
            store.get(site, "k")
    with pytest.raises(StoreUnavailable, match="producer"):
        store.get(None, "k")


def test_the_producer_reaches_the_store_when_any_site_does(net: Net, store: SimStore) -> None:
    store.put("a", "k", {"v": "v"}, expected_revision=None)
    _cut(net, ("a", "b"), ("b", "a"), ("a", "w"), ("w", "a"))

    assert store.get(None, "k") is not None  # through b and w

    net.crashed.add("w")
    net.changed()  # now a, b and w each alone: no majority anywhere
    with pytest.raises(StoreUnavailable):
        store.get(None, "k")


def test_quiet_tail_covers_the_longest_hold_off() -> None:
    config = SimConfig()

    assert config.quiet_tail_s > config.detector.max_holdoff_s


def test_a_site_view_is_the_coordination_store_port(net: Net, store: SimStore) -> None:
    view = SimSiteStore(store, "a")
    revision = view.create("k", {"v": 1})
    assert view.compare_and_set("k", {"v": 2}, expected_revision=revision) != revision
    assert [v.key for v in view.list("")] == ["k"]
    with pytest.raises(Conflict):
        view.compare_and_set("k", {"v": 3}, expected_revision=revision)
    _cut(net, ("a", "b"), ("b", "a"), ("a", "w"), ("w", "a"))
    with pytest.raises(StoreUnavailable):
        view.get("k")
