"""The canary partial undrain: a site capped to N shards per component, from the policy
document through the placement and the controller's decisions to the operator's commands.

The decision tests reuse ``test_controller``'s views and its safety check; the runtime
tests reuse the in-process cluster of ``test_runtime.py`` (two agents and three
controllers on one store, a fake clock, invariants checked after every step).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.runtime_cluster import COMPONENTS, SHARDS, Cluster, started
from test_controller import (
    ALL,
    EVEN,
    TOPO,
    _mostly,
    check_decision_is_safe,
    owned,
    owners_of,
    run_to_rest,
    view,
    views,
)

from failover.adapters.memory_store import MemoryStore
from failover.core.controller import (
    DecisionKind,
    PlacementPolicy,
    SiteView,
    decide_component,
    grant_valid,
    site_placeable,
    site_serves,
)
from failover.core.fencing import Assignment, Ownership
from failover.core.placement import (
    above_caps,
    capped_quotas,
    fitted_quotas,
    handback_batch,
    place_orphans,
    target_owners,
)
from failover.core.topology import default_topology
from failover.runtime import admin
from failover.runtime.admin import Refused, effective_policy
from failover.runtime.documents import ADMIN_POLICY_KEY, AdminPolicy
from failover.runtime.events import read_events

TOPOLOGY = default_topology(shards_per_component=SHARDS)


# -- the policy document ----------------------------------------------------------------------


def test_the_canary_survives_a_json_round_trip() -> None:
    policy = AdminPolicy(canary={"b": 2, "a": 1}, pinned={"eap": "a"}, reason="update")
    doc = json.loads(json.dumps(policy.to_doc()))
    assert doc["canary"] == {"a": 1, "b": 2}
    back = AdminPolicy.from_doc(doc)
    assert back == AdminPolicy(canary={"a": 1, "b": 2}, pinned={"eap": "a"}, reason="update")
    assert back.same_choices(policy)
    assert not back.same_choices(AdminPolicy(canary={"a": 1, "b": 3}, pinned={"eap": "a"}))


def test_a_document_without_canary_means_no_canary() -> None:
    old = {"drained_sites": ["a"], "pinned": {}, "changed_by": "ops", "reason": ""}
    assert AdminPolicy.from_doc(old).canary == {}
    assert AdminPolicy.from_doc({}) == AdminPolicy()


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ([["a", 2]], r"field 'canary' must be an object of site -> shards per component"),
        ({"": 2}, r"field 'canary' must be an object"),
        ({"a": 0}, r"site a's shards per component must be an integer >= 1, got 0"),
        ({"a": -3}, r"must be an integer >= 1, got -3"),
        ({"a": 1.5}, r"must be an integer >= 1, got 1.5"),
        ({"a": "2"}, r"must be an integer >= 1, got '2'"),
        ({"a": True}, r"must be an integer >= 1, got True"),
    ],
)
def test_bad_canary_values_name_the_field(canary: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AdminPolicy.from_doc({"canary": canary})


def test_a_site_is_never_both_drained_and_a_canary() -> None:
    with pytest.raises(ValueError, match=r"site\(s\) a both drained and limited to a canary"):
        AdminPolicy.from_doc({"drained_sites": ["a"], "canary": {"a": 2}})
    assert AdminPolicy.from_doc({"drained_sites": ["b"], "canary": {"a": 2}}).canary == {"a": 2}


# -- placement within caps --------------------------------------------------------------------


def test_capped_quotas_hold_a_site_at_its_cap_and_give_the_rest_to_the_others() -> None:
    w = {"a": 1.0, "b": 1.0, "c": 1.0}
    owners: list[str | None] = [None] * 16
    assert capped_quotas(owners, ["a", "b"], w, {"a": 2}) == {"a": 2, "b": 14}
    assert capped_quotas(owners, ["a", "b"], w, {"a": 10}) == fitted_quotas(owners, ["a", "b"], w)
    assert capped_quotas(owners, ["a", "b", "c"], w, {"a": 1, "b": 7}) == {"a": 1, "b": 7, "c": 8}
    # the second cap only binds once the first one has pushed more onto the others
    assert capped_quotas([None] * 12, ["a", "b", "c"], w, {"a": 0, "b": 5}) == {
        "a": 0,
        "b": 5,
        "c": 7,
    }
    # every site capped: the caps are lifted, every shard still has a site
    assert capped_quotas(owners, ["a"], w, {"a": 2}) == {"a": 16}
    assert capped_quotas(owners, ["a", "b"], w, {"a": 2, "b": 3}) == {"a": 8, "b": 8}


def test_above_caps_names_a_sites_later_shards() -> None:
    owners = ["a", "b", "a", "a", None, "a", "b"]
    assert above_caps(owners, {"a": 2}) == [3, 5]
    assert above_caps(owners, {"a": 2, "b": 1}) == [3, 5, 6]
    assert above_caps(owners, {}) == []


@st.composite
def capped_placements(
    draw: st.DrawFn,
) -> tuple[list[str | None], list[str], dict[str, float], dict[str, int]]:
    sites = ["a", "b", "c"][: draw(st.integers(min_value=1, max_value=3))]
    weights = {s: draw(st.sampled_from([0.5, 1.0, 1.0, 2.0])) for s in sites}
    count = draw(st.integers(min_value=1, max_value=40))
    owners = draw(st.lists(st.sampled_from([*sites, "x", None]), min_size=count, max_size=count))
    caps = {
        s: draw(st.integers(min_value=0, max_value=count + 2))
        for s in draw(st.sets(st.sampled_from(sites)))
    }
    return owners, sites, weights, caps


@given(capped_placements())
@settings(max_examples=200)
def test_a_capped_target_places_every_shard_and_keeps_each_cap_while_a_site_is_uncapped(
    placement: tuple[list[str | None], list[str], dict[str, float], dict[str, int]],
) -> None:
    owners, sites, weights, caps = placement
    quota = capped_quotas(owners, sites, weights, caps)
    assert sum(quota.values()) == len(owners)
    target = target_owners(owners, sites, weights, caps=caps)
    assert len(target) == len(owners) and set(target) <= set(sites)
    held = {s: target.count(s) for s in sites}
    assert held == quota
    if any(s not in caps for s in sites):
        assert all(held[s] <= caps[s] for s in sites if s in caps)
    else:
        assert quota == fitted_quotas(owners, sites, weights)
    # the target is its own target: a canary at rest stays at rest
    assert target_owners(target, sites, weights, caps=caps) == target
    assert handback_batch(target, sites, weights, batch_size=3, caps=caps) == {}


@given(capped_placements(), st.data())
@settings(max_examples=200)
def test_orphans_all_get_a_site_and_never_push_a_cap_over_while_a_site_is_uncapped(
    placement: tuple[list[str | None], list[str], dict[str, float], dict[str, int]],
    data: st.DataObject,
) -> None:
    owners, sites, weights, caps = placement
    orphans = data.draw(st.lists(st.sampled_from(range(len(owners))), unique=True))
    moves = place_orphans(owners, orphans, sites, weights, caps=caps)
    assert set(moves) == set(orphans)
    after = [moves.get(i, o) for i, o in enumerate(owners)]
    if any(s not in caps for s in sites):
        for s in {moves[i] for i in orphans} & set(caps):
            assert after.count(s) <= caps[s], (s, after)


@given(capped_placements(), st.integers(min_value=1, max_value=5))
@settings(max_examples=100)
def test_capped_handback_converges_within_the_caps_and_then_stays(
    placement: tuple[list[str | None], list[str], dict[str, float], dict[str, int]],
    batch_size: int,
) -> None:
    owners, sites, weights, caps = placement
    current = list(owners)
    for _ in range(len(owners) + 1):
        batch = handback_batch(current, sites, weights, batch_size=batch_size, caps=caps)
        if not batch:
            break
        assert len(batch) <= batch_size
        current = [batch.get(i, o) for i, o in enumerate(current)]
    else:
        raise AssertionError("the hand-back did not converge")
    assert set(current) <= set(sites)
    assert target_owners(current, sites, weights, caps=caps) == current
    if any(s not in caps for s in sites):
        assert all(current.count(s) <= n for s, n in caps.items())


# -- the controller's decisions with caps ----------------------------------------------------


def test_a_canary_site_gets_exactly_its_cap_through_drain_then_transfer() -> None:
    current = {c: owned(c, ["b"] * 16, epoch=3) for c in ("eep", "gsm")}
    policy = PlacementPolicy(caps={"a": 2})
    history = run_to_rest(TOPO, current, {"a": {"session": 2}, "b": {}}, policy)
    for c in ("eep", "gsm"):
        assert current[c].counts(["a", "b"]) == {"a": 2, "b": 14}
        kinds = [d.kind for d in history if d.component == c]
        assert kinds == [DecisionKind.DRAIN, DecisionKind.TRANSFER]
    drain = next(d for d in history if d.kind is DecisionKind.DRAIN)
    assert drain.reason.endswith("(canary: a at most 2)")


def test_shards_above_a_cap_leave_in_batches_through_drains() -> None:
    current = {c: owned(c, EVEN, epoch=3) for c in ("eep", "gsm")}  # a holds 8 each
    policy = PlacementPolicy(handback_batch_size=4, caps={"a": 1})
    history = run_to_rest(TOPO, current, {"a": {}, "b": {}}, policy)
    for c in ("eep", "gsm"):
        assert owners_of(current[c]) == ["a"] + ["b"] * 15  # a keeps its earliest shard
        kinds = [d.kind for d in history if d.component == c]
        assert kinds == [DecisionKind.DRAIN, DecisionKind.TRANSFER] * 2
        assert all(len(d.shards) <= 4 for d in history)


def test_shards_above_a_cap_leave_even_while_the_canary_site_is_in_hold_off() -> None:
    current = owned("eep", EVEN, epoch=3)
    vs = views(view("a", stable=()), view("b"))
    d = decide_component(TOPO, current, vs, PlacementPolicy(caps={"a": 5}))
    assert d is not None and d.kind is DecisionKind.DRAIN
    assert d.shards == (10, 12, 14)  # only those above the cap, the latest ones
    # and not while the uncapped site is in hold-off: nobody could take them
    vs = views(view("a"), view("b", stable=()))
    assert decide_component(TOPO, current, vs, PlacementPolicy(caps={"a": 5})) is None


def test_orphans_go_to_a_capped_site_when_it_is_the_only_survivor() -> None:
    topo = default_topology(components=("eep",), shards_per_component=16)
    current = {"eep": owned("eep", ["a", "a"] + ["b"] * 14, epoch=4)}
    policy = PlacementPolicy(caps={"a": 2})
    vs = views(view("a"), view("b", alive=False))
    d = decide_component(topo, current["eep"], vs, policy)
    assert d is not None and d.kind is DecisionKind.FAILOVER
    assert owners_of(d.ownership) == ["a"] * 16  # never without an owner because of a cap
    current["eep"] = d.ownership
    # b is back but in hold-off: the canary site keeps everything meanwhile
    assert run_to_rest(topo, current, {"a": {}, "b": {"session": 2, "stable": ()}}, policy) == []
    # b stable: everything above the cap goes back through drains
    run_to_rest(topo, current, {"a": {}, "b": {"session": 2}}, policy)
    assert owners_of(current["eep"]) == ["a", "a"] + ["b"] * 14


def test_orphans_prefer_an_uncapped_site_in_hold_off_to_a_capped_stable_one() -> None:
    vs = views(view("a"), view("b", stable=()))
    d = decide_component(TOPO, owned("eep", [None] * 16, epoch=0), vs, PlacementPolicy())
    assert d is not None and d.ownership.counts(["a", "b"]) == {"a": 16, "b": 0}
    d = decide_component(
        TOPO, owned("eep", [None] * 16, epoch=0), vs, PlacementPolicy(caps={"a": 3})
    )
    assert d is not None and d.kind is DecisionKind.INITIAL
    assert d.ownership.counts(["a", "b"]) == {"a": 3, "b": 13}


def test_a_drained_site_comes_after_a_capped_one_for_orphans() -> None:
    vs = views(view("a"), view("b", admin_drained=True))
    d = decide_component(
        TOPO, owned("eep", [None] * 16, epoch=0), vs, PlacementPolicy(caps={"a": 3})
    )
    assert d is not None and d.ownership.counts(["a", "b"]) == {"a": 16, "b": 0}


def test_drains_towards_a_site_that_fell_back_into_hold_off_are_cancelled() -> None:
    current = {"eep": owned("eep", EVEN, epoch=3)}
    policy = PlacementPolicy(caps={"a": 1})
    d = decide_component(TOPO, current["eep"], views(view("a"), view("b")), policy)
    assert d is not None and d.kind is DecisionKind.DRAIN
    acked = {("eep", i, d.ownership.shards[i].drain_id) for i in d.shards}
    vs = views(view("a", drained=acked), view("b", stable=()))
    cancel = decide_component(TOPO, d.ownership, vs, policy)
    assert cancel is not None and cancel.kind is DecisionKind.CANCEL_DRAIN
    assert owners_of(cancel.ownership) == EVEN


def test_a_pin_to_a_capped_site_wins_over_its_cap() -> None:
    current = {c: owned(c, EVEN, epoch=3) for c in ("eep", "gsm")}
    policy = PlacementPolicy(pinned={"eep": "a"}, caps={"a": 2})
    run_to_rest(TOPO, current, {"a": {}, "b": {}}, policy)
    assert owners_of(current["eep"]) == ["a"] * 16
    assert current["gsm"].counts(["a", "b"]) == {"a": 2, "b": 14}  # the cap holds for others


@st.composite
def capped_states(draw: st.DrawFn) -> tuple[Ownership, dict[str, SiteView], PlacementPolicy]:
    """Any state of one component under caps: orphans, drains in flight (mostly acked),
    sites in hold-off, now and then a drained site or a pin."""
    capped = draw(st.sampled_from([("a",), ("b",), ("a",), ("b",), ("a", "b")]))
    caps = {s: draw(st.integers(min_value=0, max_value=3)) for s in capped}
    sessions = {name: draw(st.integers(min_value=1, max_value=2)) for name in ("a", "b")}
    healthy = draw(st.booleans())  # no orphans: exercises drains and transfers
    n = draw(st.integers(min_value=2, max_value=16))
    max_epoch = draw(st.sampled_from([6] if healthy else [0, 6, 6, 6]))
    shards = []
    for _ in range(n):
        owner = draw(st.sampled_from(("a", "b") if healthy else ("a", "b", "a", "b", None)))
        if owner is None or max_epoch == 0:
            shards.append(Assignment(None, 0))
            continue
        epoch = draw(st.integers(min_value=1, max_value=max_epoch - 2))
        session = sessions[owner] if healthy or draw(_mostly(True)) else 3
        draining = draw(st.sampled_from([False, False, True]))
        drain_id = draw(st.integers(min_value=epoch + 1, max_value=max_epoch)) if draining else 0
        shards.append(Assignment(owner, epoch, session, draining, drain_id))
    current = Ownership("eep", tuple(shards), max_epoch)
    vs: dict[str, SiteView] = {}
    for name in ("a", "b"):
        mine = [(i, s) for i, s in enumerate(shards) if s.owner == name and s.draining]
        some = bool(mine) and draw(_mostly(False))  # mostly every drain acked
        acked = list(draw(st.sets(st.sampled_from(mine)))) if some else mine
        vs[name] = view(
            name,
            alive=healthy or draw(_mostly(True)),
            session=sessions[name],
            up=ALL if healthy or draw(_mostly(True)) else frozenset({"gsm"}),
            stable=ALL if draw(st.sampled_from([True, True, False])) else frozenset(),
            drained={("eep", i, s.drain_id) for i, s in acked},
            admin_drained=draw(st.sampled_from([False] * 5 + [True])),
        )
    policy = PlacementPolicy(
        handback_batch_size=draw(st.integers(min_value=1, max_value=5)),
        pinned=draw(st.sampled_from([{}] * 5 + [{"eep": "a"}, {"eep": "b"}])),
        caps=caps,
    )
    return current, vs, policy


def _uncapped_can_take(vs: Mapping[str, SiteView], c: str, policy: PlacementPolicy) -> bool:
    return any(
        site_serves(v, c) and site_placeable(v, c, policy) and v.name not in policy.caps
        for v in vs.values()
    )


@given(capped_states())
@settings(max_examples=400)
def test_no_decision_pushes_a_capped_site_over_its_cap_while_an_uncapped_site_may_take_work(
    state: tuple[Ownership, dict[str, SiteView], PlacementPolicy],
) -> None:
    current, vs, policy = state
    d = decide_component(TOPO, current, vs, policy)
    if d is None:
        return
    check_decision_is_safe(current, d, vs, policy)
    if not _uncapped_can_take(vs, current.component, policy):
        return
    after = owners_of(d.ownership)
    for i in d.shards:
        to = d.ownership.shards[i].owner
        if to is not None and to in policy.caps and to != current.shards[i].owner:
            assert after.count(to) <= policy.caps[to], (d.kind, to, after)


@given(capped_states())
@settings(max_examples=300)
def test_with_caps_no_shard_stays_without_an_owner_while_some_site_serves(
    state: tuple[Ownership, dict[str, SiteView], PlacementPolicy],
) -> None:
    current, vs, policy = state
    c = current.component
    orphans = [i for i, a in enumerate(current.shards) if not grant_valid(a, vs, c)]
    if not orphans or not any(site_serves(v, c) for v in vs.values()):
        return
    d = decide_component(TOPO, current, vs, policy)
    assert d is not None and d.kind in (DecisionKind.INITIAL, DecisionKind.FAILOVER)
    assert set(d.shards) == set(orphans)
    assert all(grant_valid(a, vs, c) for a in d.ownership.shards)


@given(
    st.lists(st.sampled_from(["a", "b", None]), min_size=1, max_size=16),
    st.integers(min_value=1, max_value=5),
    st.sampled_from([{"a": 0}, {"a": 1}, {"a": 3}, {"b": 2}, {"a": 1, "b": 1}]),
    st.booleans(),
)
@settings(max_examples=80)
def test_from_any_start_the_controller_comes_to_rest_within_the_caps(
    start: list[str | None], batch_size: int, caps: dict[str, int], b_alive: bool
) -> None:
    topo = default_topology(components=("eep",), shards_per_component=len(start))
    current = {"eep": owned("eep", start, epoch=1)}
    policy = PlacementPolicy(handback_batch_size=batch_size, caps=caps)
    run_to_rest(topo, current, {"a": {"up": ALL}, "b": {"alive": b_alive}}, policy)
    owners = owners_of(current["eep"])
    live = ["a", "b"] if b_alive else ["a"]
    assert all(o in live for o in owners)  # nobody without an owner, nothing on a dead site
    assert not any(a.draining for a in current["eep"].shards)
    assert owners == target_owners(owners, live, {"a": 1.0, "b": 1.0}, caps=caps)
    if any(s not in caps for s in live):
        assert all(owners.count(s) <= n for s, n in caps.items())


# -- the operator's canary ------------------------------------------------------------------


@pytest.fixture
def cluster() -> Cluster:
    return started(MemoryStore())


def test_canary_is_a_partial_undrain_and_undrain_or_drain_lift_it(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    change = admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock, changed_by="ops")
    assert change.changed
    assert change.summary == "site a undrained to a canary of 1 shard(s) per component"
    policy = admin.read_policy(store)
    assert (policy.drained_sites, policy.canary) == ((), {"a": 1})
    last = read_events(store).events[-1][1]
    assert last.kind == "admin"
    assert last.reason == f"canary a at 1 shard(s) per component by ops: {change.summary}"

    again = admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)
    assert not again.changed
    assert again.summary == "site a is already limited to a canary of 1 shard(s) per component"
    wider = admin.canary(store, "a", 3, topology=TOPOLOGY, clock=clock)
    assert wider.summary == "site a limited to a canary of 3 shard(s) per component"

    drained = admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    assert drained.summary == "site a drained"
    assert admin.read_policy(store).canary == {}
    admin.canary(store, "a", 2, topology=TOPOLOGY, clock=clock)
    undrained = admin.undrain(store, "a", topology=TOPOLOGY, clock=clock)
    assert undrained.summary == "site a undrained fully (canary of 2 lifted)"
    assert admin.read_policy(store).same_choices(AdminPolicy())
    nothing = admin.undrain(store, "a", topology=TOPOLOGY, clock=clock)
    assert nothing.summary == "site a is neither drained nor limited to a canary"


def test_canary_refusals_say_why(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    with pytest.raises(ValueError, match=r"'w' is a witness"):
        admin.canary(store, "w", 1, topology=TOPOLOGY, clock=clock)
    with pytest.raises(ValueError, match="unknown site 'c'"):
        admin.canary(store, "c", 1, topology=TOPOLOGY, clock=clock)
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match=r"shards per component must be an integer >= 1"):
            admin.canary(store, "a", bad, topology=TOPOLOGY, clock=clock)

    admin.switchover(store, "eap", "a", topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match=r"cannot limit a to a canary: eap pinned to it"):
        admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)
    admin.rebalance(store, topology=TOPOLOGY, clock=clock)

    admin.drain(store, "b", topology=TOPOLOGY, clock=clock)
    with pytest.raises(
        Refused, match=r"cannot limit a to a canary: no other worker site .*\(b is drained\)"
    ):
        admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)
    admin.canary(store, "b", 1, topology=TOPOLOGY, clock=clock)  # from drained: fine
    with pytest.raises(Refused, match=r"b is limited to a canary of 1 shard\(s\) per component"):
        admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match=r"cannot drain a: .*b is limited to a canary"):
        admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match=r"cannot switch eep to b: site b is limited to a canary"):
        admin.switchover(store, "eep", "b", topology=TOPOLOGY, clock=clock)
    assert admin.read_policy(store).canary == {"b": 1}

    admin.undrain(store, "b", topology=TOPOLOGY, clock=clock)
    cluster.stop("b")
    cluster.run(3.0)  # b's lease is older than its duration now
    with pytest.raises(Refused, match=r"b is not alive"):
        admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)


def test_effective_policy_passes_the_canary_as_caps() -> None:
    policy = AdminPolicy(drained_sites=("b",), canary={"a": 2, "w": 1, "z": 3})
    drained, placement, ignored = effective_policy(policy, TOPOLOGY, PlacementPolicy(caps={"b": 5}))
    assert drained == {"b"}
    assert placement.caps == {"a": 2, "b": 5}
    assert ignored == [
        "canary of site 'w', not a worker site",
        "canary of site 'z', not a worker site",
    ]
    both = AdminPolicy(drained_sites=("a",), canary={"a": 2})  # only built by hand
    assert effective_policy(both, TOPOLOGY, PlacementPolicy())[1].caps == {}


def test_outlook_tells_the_canary(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    ahead = admin.outlook(store, AdminPolicy(canary={"a": 1}), topology=TOPOLOGY, clock=clock)
    assert ahead.moves == {("a", "b"): len(COMPONENTS)}
    assert ahead.sentence() == (
        f"{len(COMPONENTS)} shard(s) move a -> b, in batches of 4 per component (drain, "
        "then transfer); a holds at most 1 shard(s) per component (canary)"
    )
    unchanged = admin.outlook(store, AdminPolicy(canary={"a": 2}), topology=TOPOLOGY, clock=clock)
    assert unchanged.sentence() == (
        "nothing moves: the placement already fits; a holds at most 2 shard(s) per component "
        "(canary)"
    )


def test_the_controller_gives_a_canary_site_its_share_and_no_more(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    cluster.run_until(lambda: cluster.settled(sites=("b",)), limit_s=5.0, what="all at b")
    admin.canary(store, "a", 1, topology=TOPOLOGY, clock=clock)
    leader = next(c for c in cluster.controllers.values() if c.leading(cluster.now()))

    def canary_in_place() -> bool:
        return cluster.settled() and all(
            cluster.ownership(c).counts(("a", "b")) == {"a": 1, "b": SHARDS - 1} for c in COMPONENTS
        )

    cluster.run_until(canary_in_place, limit_s=5.0, what="one shard each at a")
    cluster.run(2.0)
    assert canary_in_place()  # and it stays there: no flapping
    assert leader.admin.canary == {"a": 1}
    transfers = [e for _, e in read_events(store).events if e.kind == "transfer"]
    assert transfers and "(operator: a canary at 1)" in transfers[-1].reason

    admin.undrain(store, "a", topology=TOPOLOGY, clock=clock)
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=5.0, what="even")
    assert cluster.violations == []  # never two processes serving a shard, no stale epoch
    assert store.get(ADMIN_POLICY_KEY) is not None
