"""The controller's decisions: failover at once, hand-back only through drain and ack."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.controller import (
    Decision,
    DecisionKind,
    PlacementPolicy,
    SiteView,
    decide,
    decide_component,
)
from failover.core.fencing import Assignment, Ownership, set_draining, unowned
from failover.core.placement import is_even
from failover.core.topology import Site, SiteRole, Topology, default_topology

COMPONENTS = ("eep", "gsm")
TOPO = default_topology(components=COMPONENTS)
POLICY = PlacementPolicy()
ALL = frozenset(COMPONENTS)


def view(
    name: str,
    *,
    alive: bool = True,
    session: int = 1,
    up: Iterable[str] = ALL,
    stable: Iterable[str] | None = None,
    drained: Iterable[tuple[str, int, int]] = (),
    admin_drained: bool = False,
) -> SiteView:
    return SiteView(
        name,
        alive=alive,
        session=session,
        components_up=frozenset(up),
        components_stable=frozenset(up if stable is None else stable),
        drained=frozenset(drained),
        admin_drained=admin_drained,
    )


def owned(
    component: str, owners: Iterable[str | None], *, epoch: int, session: int = 1
) -> Ownership:
    shards = tuple(Assignment(o, epoch if o else 0, session if o else 0) for o in owners)
    return Ownership(component, shards, epoch)


EVEN = ["a", "b"] * 8  # a owns the even indexes, b the odd ones


def both_even(epoch: int = 5) -> dict[str, Ownership]:
    return {c: owned(c, EVEN, epoch=epoch) for c in COMPONENTS}


def views(*vs: SiteView) -> dict[str, SiteView]:
    return {v.name: v for v in vs}


def owners_of(ownership: Ownership) -> list[str | None]:
    return [a.owner for a in ownership.shards]


def changed(before: Ownership, after: Ownership) -> set[int]:
    return {
        i
        for i, (x, y) in enumerate(zip(before.shards, after.shards, strict=True))
        if (x.owner, x.session, x.epoch) != (y.owner, y.session, y.epoch)
    }


# --- initial placement ------------------------------------------------------------------


def test_initial_placement_is_even_over_stable_sites_with_epoch_1() -> None:
    current = {c: unowned(c, 16) for c in COMPONENTS}
    decisions = decide(
        TOPO, current, views(view("a", session=3), view("b", session=5)), POLICY, trace_id="t0"
    )
    assert [d.component for d in decisions] == list(COMPONENTS)
    for d in decisions:
        assert d.kind is DecisionKind.INITIAL
        assert d.shards == tuple(range(16))
        assert d.ownership.max_epoch == 1
        assert d.ownership.trace_id == "t0"
        assert d.ownership.counts(["a", "b"]) == {"a": 8, "b": 8}
        for a in d.ownership.shards:
            assert a.epoch == 1
            assert not a.draining
            assert a.session == {"a": 3, "b": 5}[str(a.owner)]


def test_initial_placement_waits_for_nobody_but_prefers_stable_sites() -> None:
    d = decide_component(TOPO, unowned("eep", 16), views(view("a"), view("b", stable=())), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.INITIAL
    assert owners_of(d.ownership) == ["a"] * 16


def test_nothing_to_place_on_is_no_decision() -> None:
    vs = views(view("a", alive=False), view("b", up=()))
    assert decide_component(TOPO, unowned("eep", 16), vs, POLICY) is None


@given(
    st.integers(min_value=1, max_value=32),
    st.floats(min_value=0.1, max_value=10),
    st.floats(min_value=0.1, max_value=10),
)
@settings(max_examples=60)
def test_initial_placement_is_even_for_any_weights(shards: int, wa: float, wb: float) -> None:
    topo = default_topology(
        components=("eep",), shards_per_component=shards, weight_a=wa, weight_b=wb
    )
    d = decide_component(topo, unowned("eep", shards), views(view("a"), view("b")), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.INITIAL
    assert is_even(owners_of(d.ownership), ["a", "b"], {"a": wa, "b": wb})


def test_initial_placement_is_settled() -> None:
    # Used to place 12/4 and then at once drain a shard to reach 11/5 (both are even).
    topo = default_topology(components=("eep",), weight_a=2.5, weight_b=1.0)
    vs = views(view("a"), view("b"))
    d = decide_component(topo, unowned("eep", 16), vs, POLICY)
    assert d is not None
    assert d.ownership.counts(["a", "b"]) == {"a": 11, "b": 5}  # shares 11.43 and 4.57
    assert decide_component(topo, d.ownership, vs, POLICY) is None


@given(
    st.integers(min_value=1, max_value=32),
    st.floats(min_value=0.1, max_value=10),
    st.floats(min_value=0.1, max_value=10),
)
@settings(max_examples=60)
def test_initial_placement_is_settled_for_any_weights(shards: int, wa: float, wb: float) -> None:
    topo = default_topology(
        components=("eep",), shards_per_component=shards, weight_a=wa, weight_b=wb
    )
    vs = views(view("a"), view("b"))
    d = decide_component(topo, unowned("eep", shards), vs, POLICY)
    assert d is not None
    assert decide_component(topo, d.ownership, vs, POLICY) is None


# --- failover ---------------------------------------------------------------------------


def test_a_dead_site_loses_all_its_shards_to_the_survivor_in_one_decision() -> None:
    current = both_even(epoch=5)
    decisions = decide(
        TOPO, current, views(view("a", alive=False), view("b")), POLICY, trace_id="t9"
    )
    assert [d.component for d in decisions] == list(COMPONENTS)
    for d in decisions:
        before = current[d.component]
        assert d.kind is DecisionKind.FAILOVER
        assert d.shards == tuple(range(0, 16, 2))
        assert d.ownership.max_epoch == 6
        assert d.ownership.trace_id == "t9"
        for i, a in enumerate(d.ownership.shards):
            if i % 2 == 0:
                assert a == Assignment("b", 6, 1, False)
            else:
                assert a == before.shards[i]  # the survivor's own shards keep their epoch
        assert "(was: a)" in d.reason


def test_a_missing_view_counts_as_a_dead_site() -> None:
    d = decide_component(TOPO, owned("eep", EVEN, epoch=2), views(view("b")), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.FAILOVER
    assert owners_of(d.ownership) == ["b"] * 16


def test_a_new_session_makes_the_old_grants_orphans() -> None:
    current = owned("eep", EVEN, epoch=4, session=1)
    d = decide_component(TOPO, current, views(view("a", session=2), view("b")), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.FAILOVER
    assert d.shards == tuple(range(0, 16, 2))
    # the fenced site came back stable: its orphans are re-granted to its new session
    for i, a in enumerate(d.ownership.shards):
        expected = Assignment("a", 5, 2) if i % 2 == 0 else Assignment("b", 4, 1)
        assert a == expected


def test_a_down_component_moves_only_that_components_shards() -> None:
    current = both_even(epoch=3)
    a_without_eep = view("a", up={"gsm"})
    decisions = decide(TOPO, current, views(a_without_eep, view("b")), POLICY)
    assert len(decisions) == 1
    (d,) = decisions
    assert d.component == "eep"
    assert d.kind is DecisionKind.FAILOVER
    assert owners_of(d.ownership) == ["b"] * 16
    assert changed(current["eep"], d.ownership) == set(range(0, 16, 2))


def test_orphans_go_first_even_while_shards_are_draining() -> None:
    current = set_draining(owned("eep", EVEN, epoch=3), [1, 3], draining=True)
    assert current.max_epoch == 4  # the drain took id 4
    d = decide_component(TOPO, current, views(view("a", alive=False), view("b")), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.FAILOVER
    assert d.shards == tuple(range(0, 16, 2))
    assert d.ownership.max_epoch == 5  # never the drain's id again
    for i in range(0, 16, 2):
        assert d.ownership.shards[i] == Assignment("b", 5, 1)
    for i in (1, 3):  # still draining, untouched
        assert d.ownership.shards[i] == Assignment("b", 3, 1, True, 4)


# --- hand-back: drain, ack, transfer ----------------------------------------------------


def all_on_b(component: str = "eep", epoch: int = 6) -> Ownership:
    return owned(component, ["b"] * 16, epoch=epoch)


def test_no_hand_back_while_the_returned_site_is_in_hold_off() -> None:
    vs = views(view("a", session=2, stable=()), view("b"))
    assert decide_component(TOPO, all_on_b(), vs, POLICY) is None


def test_hand_back_starts_with_a_drain_of_one_batch() -> None:
    current = all_on_b()
    d = decide_component(TOPO, current, views(view("a", session=2), view("b")), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.DRAIN
    assert d.shards == (8, 9, 10, 11)
    assert d.ownership.max_epoch == 7  # the drain's id
    for i, a in enumerate(d.ownership.shards):
        # owner, epoch and session unchanged; the batch drains under id 7
        expected = Assignment("b", 6, 1, True, 7) if i in d.shards else Assignment("b", 6, 1)
        assert a == expected


def test_transfer_waits_for_the_owners_drained_ack() -> None:
    draining = set_draining(all_on_b(), [8, 9, 10, 11], draining=True)
    assert draining.shards[8].drain_id == 7
    a = view("a", session=2)
    assert decide_component(TOPO, draining, views(a, view("b")), POLICY) is None
    # an ack of the shard's epoch, another drain id, component or shard is not an ack
    wrong = {("eep", 8, 6), ("eep", 9, 8), ("eep", 10, 0), ("gsm", 9, 7), ("eep", 12, 7)}
    assert decide_component(TOPO, draining, views(a, view("b", drained=wrong)), POLICY) is None
    # nor is an ack given by a site that does not own the shard
    stray = {("eep", 8, 7)}
    a_acks = view("a", session=2, drained=stray)
    assert decide_component(TOPO, draining, views(a_acks, view("b")), POLICY) is None


def test_transfer_moves_exactly_the_acked_shards_under_a_new_epoch() -> None:
    draining = set_draining(all_on_b(), [8, 9, 10, 11], draining=True)
    b = view("b", drained={("eep", 9, 7), ("eep", 11, 7)})
    d = decide_component(TOPO, draining, views(view("a", session=2), b), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.TRANSFER
    assert d.shards == (9, 11)
    assert d.ownership.max_epoch == 8
    for i, s in enumerate(d.ownership.shards):
        if i in (9, 11):
            assert s == Assignment("a", 8, 2, False, 0)
        elif i in (8, 10):
            assert s == Assignment("b", 6, 1, True, 7)  # still waiting for its ack
        else:
            assert s == Assignment("b", 6, 1)


def test_an_ack_of_a_cancelled_drain_never_transfers_a_later_drain_of_the_shard() -> None:
    a, b = view("a", session=2), view("b")
    first = decide_component(TOPO, all_on_b(), views(a, b), POLICY)
    assert first is not None
    assert first.kind is DecisionKind.DRAIN
    assert first.shards == (8, 9, 10, 11)
    old_ack = {("eep", i, 7) for i in first.shards}
    # b acknowledges, but a is gone before the transfer: the drain is cancelled
    b_acked = view("b", drained=old_ack)
    cancel = decide_component(TOPO, first.ownership, views(view("a", alive=False), b_acked), POLICY)
    assert cancel is not None
    assert cancel.kind is DecisionKind.CANCEL_DRAIN
    assert cancel.ownership == replace(all_on_b(), max_epoch=7)
    # a is back and stable: the same shards drain again, under a new id
    again = decide_component(TOPO, cancel.ownership, views(a, b_acked), POLICY)
    assert again is not None
    assert again.kind is DecisionKind.DRAIN
    assert again.shards == (8, 9, 10, 11)
    assert all(again.ownership.shards[i].drain_id == 8 for i in again.shards)
    # b's lease still lists its acks of the cancelled drain: they count for nothing
    assert decide_component(TOPO, again.ownership, views(a, b_acked), POLICY) is None
    # only an ack of the new drain lets the transfer happen
    b_new = view("b", drained=old_ack | {("eep", 10, 8)})
    d = decide_component(TOPO, again.ownership, views(a, b_new), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.TRANSFER
    assert d.shards == (10,)
    assert d.ownership.shards[10] == Assignment("a", 9, 2)


def _ack_all(ownerships: Mapping[str, Ownership], site: str) -> set[tuple[str, int, int]]:
    """What the owner's agent reports: every shard draining away from it."""
    return {
        (o.component, i, a.drain_id)
        for o in ownerships.values()
        for i, a in enumerate(o.shards)
        if a.draining and a.owner == site
    }


def run_to_rest(
    topo: Topology,
    current: dict[str, Ownership],
    make_views: dict[str, dict[str, object]],
    policy: PlacementPolicy,
    *,
    max_rounds: int = 100,
) -> list[Decision]:
    """Apply decisions until none; owners ack every drain at once. Checks each step."""
    history: list[Decision] = []
    for _ in range(max_rounds):
        vs = {
            name: view(name, drained=_ack_all(current, name), **kwargs)  # type: ignore[arg-type]
            for name, kwargs in make_views.items()
        }
        decisions = decide(topo, current, vs, policy)
        if not decisions:
            return history
        for d in decisions:
            check_decision_is_safe(current[d.component], d, vs, policy)
            current[d.component] = d.ownership
        history.extend(decisions)
    raise AssertionError("the controller did not come to rest")


def test_hand_back_converges_to_even_through_drain_then_transfer_in_batches() -> None:
    current = {c: all_on_b(c) for c in COMPONENTS}
    history = run_to_rest(TOPO, current, {"a": {"session": 2}, "b": {}}, POLICY)
    for c in COMPONENTS:
        kinds = [d.kind for d in history if d.component == c]
        assert kinds == [DecisionKind.DRAIN, DecisionKind.TRANSFER] * 2
        assert all(len(d.shards) == 4 for d in history if d.component == c)
        assert current[c].counts(["a", "b"]) == {"a": 8, "b": 8}
        assert current[c].max_epoch == 10  # two drain ids and two transfer epochs
        drain_ids = [d.ownership.max_epoch for d in history if d.component == c][::2]
        assert drain_ids == [7, 9]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5, 16])
def test_hand_back_batches_follow_the_policy(batch_size: int) -> None:
    current = {"eep": all_on_b()}
    topo = default_topology(components=("eep",))
    policy = PlacementPolicy(handback_batch_size=batch_size)
    history = run_to_rest(topo, current, {"a": {"session": 2}, "b": {}}, policy)
    drains = [d for d in history if d.kind is DecisionKind.DRAIN]
    assert len(drains) == math.ceil(8 / batch_size)
    assert all(len(d.shards) <= batch_size for d in history)
    assert current["eep"].counts(["a", "b"]) == {"a": 8, "b": 8}


def test_a_drain_is_cancelled_when_no_stable_site_is_left() -> None:
    draining = set_draining(all_on_b(), [8, 9], draining=True)
    vs = views(view("a", alive=False), view("b", stable=()))
    d = decide_component(TOPO, draining, vs, POLICY)
    assert d is not None
    assert d.kind is DecisionKind.CANCEL_DRAIN
    assert d.shards == (8, 9)
    # owners and epochs as before the drain; the used drain id is not given back
    assert d.ownership == replace(all_on_b(), max_epoch=7)


def test_an_acked_drain_whose_target_went_away_is_cancelled() -> None:
    draining = set_draining(all_on_b(), [8, 9], draining=True)
    acked = view("b", drained={("eep", 8, 7), ("eep", 9, 7)})
    d = decide_component(TOPO, draining, views(view("a", alive=False), acked), POLICY)
    assert d is not None
    assert d.kind is DecisionKind.CANCEL_DRAIN
    assert d.shards == (8, 9)
    assert d.ownership == replace(all_on_b(), max_epoch=7)


# --- operator choices -------------------------------------------------------------------


def test_an_admin_drained_site_is_emptied_through_drains() -> None:
    current = both_even()
    history = run_to_rest(TOPO, current, {"a": {"admin_drained": True}, "b": {}}, POLICY)
    for c in COMPONENTS:
        assert owners_of(current[c]) == ["b"] * 16
        kinds = [d.kind for d in history if d.component == c]
        assert kinds == [DecisionKind.DRAIN, DecisionKind.TRANSFER] * 2


def test_an_admin_drain_moves_work_off_even_while_a_third_site_is_in_hold_off() -> None:
    topo = Topology(
        sites=(
            Site("a", SiteRole.WORKER),
            Site("b", SiteRole.WORKER),
            Site("c", SiteRole.WORKER),
            Site("w", SiteRole.WITNESS, 0.0),
        ),
        components=("eep",),
    )
    current = {"eep": owned("eep", EVEN, epoch=2)}
    vs = views(view("a", admin_drained=True), view("b"), view("c", stable=()))
    d = decide_component(topo, current["eep"], vs, POLICY)
    assert d is not None
    assert d.kind is DecisionKind.DRAIN
    assert d.shards == (0, 2, 4, 6)
    # only the admin-drained site gives work up, and only to the stable site
    history = run_to_rest(
        topo, current, {"a": {"admin_drained": True}, "b": {}, "c": {"stable": ()}}, POLICY
    )
    assert owners_of(current["eep"]) == ["b"] * 16
    assert [d.kind for d in history] == [DecisionKind.DRAIN, DecisionKind.TRANSFER] * 2


def test_no_drain_of_an_admin_drained_site_while_nobody_is_stable() -> None:
    current = owned("eep", EVEN, epoch=2)
    vs = views(view("a", admin_drained=True), view("b", stable=()))
    assert decide_component(TOPO, current, vs, POLICY) is None


def test_a_pinned_component_moves_to_its_pin_and_others_stay() -> None:
    current = both_even()
    policy = PlacementPolicy(pinned={"eep": "b"})
    history = run_to_rest(TOPO, current, {"a": {}, "b": {}}, policy)
    assert owners_of(current["eep"]) == ["b"] * 16
    assert owners_of(current["gsm"]) == EVEN
    assert {d.component for d in history} == {"eep"}


def test_rest_is_even_and_stays_quiet() -> None:
    assert decide(TOPO, both_even(), views(view("a"), view("b")), POLICY) == []


# --- safety for any state ---------------------------------------------------------------


def _valid(a: Assignment, vs: Mapping[str, SiteView], component: str) -> bool:
    v = vs.get(a.owner) if a.owner is not None else None
    return v is not None and v.alive and component in v.components_up and v.session == a.session


def check_decision_is_safe(
    before: Ownership, d: Decision, vs: Mapping[str, SiteView], policy: PlacementPolicy
) -> None:
    """No shard of a live, valid owner changes hands except after its drained ack."""
    after = d.ownership
    c = before.component
    assert after.component == c
    assert len(after.shards) == len(before.shards)
    moved = changed(before, after)
    if d.kind in (DecisionKind.INITIAL, DecisionKind.FAILOVER, DecisionKind.TRANSFER):
        assert moved == set(d.shards)
        assert after.max_epoch == before.max_epoch + 1
        for i in moved:
            old, new = before.shards[i], after.shards[i]
            assert new.epoch == after.max_epoch
            assert not new.draining
            target = vs[str(new.owner)]
            assert target.alive
            assert c in target.components_up
            assert new.session == target.session
            assert new.drain_id == 0
            if d.kind is DecisionKind.TRANSFER:
                assert old.draining
                assert _valid(old, vs, c)
                assert (c, i, old.drain_id) in vs[str(old.owner)].drained
            else:
                assert not _valid(old, vs, c), f"shard {i} of a live owner moved directly"
    else:
        assert moved == set()
        flag = d.kind is DecisionKind.DRAIN
        # a drain takes the next number as its id; a cancel takes none
        assert after.max_epoch == before.max_epoch + (1 if flag else 0)
        for i, (old, new) in enumerate(zip(before.shards, after.shards, strict=True)):
            if i in d.shards:
                assert new.draining is flag
                assert old.draining is not flag
                assert new.drain_id == (after.max_epoch if flag else 0)
            else:
                assert (new.draining, new.drain_id) == (old.draining, old.drain_id)
        if flag:
            assert 0 < len(d.shards) <= policy.handback_batch_size
    for i in set(range(len(before.shards))) - moved - set(d.shards):
        assert after.shards[i] == before.shards[i]


def _mostly(value: bool) -> st.SearchStrategy[bool]:
    return st.sampled_from([value, value, value, not value])


@st.composite
def states(draw: st.DrawFn) -> tuple[Ownership, dict[str, SiteView], PlacementPolicy]:
    sessions = {name: draw(st.integers(min_value=1, max_value=2)) for name in ("a", "b")}
    healthy = draw(st.booleans())  # no orphans: exercises drains and transfers
    n = draw(st.integers(min_value=1, max_value=12))
    max_epoch = draw(st.sampled_from([4] if healthy else [0, 4, 4, 4]))
    shards = []
    for _ in range(n):
        owner = draw(st.sampled_from(("a", "b") if healthy else ("a", "b", "a", "b", None)))
        if owner is None or max_epoch == 0:
            shards.append(Assignment(None, 0))
            continue
        epoch = draw(st.integers(min_value=1, max_value=max_epoch - 1))
        session = sessions[owner] if healthy or draw(_mostly(True)) else 3
        draining = draw(_mostly(False))
        drain_id = draw(st.integers(min_value=epoch + 1, max_value=max_epoch)) if draining else 0
        shards.append(Assignment(owner, epoch, session, draining, drain_id))
    current = Ownership("eep", tuple(shards), max_epoch)
    vs: dict[str, SiteView] = {}
    for name in ("a", "b"):
        if not healthy and draw(_mostly(False)):
            continue  # no view at all
        up = ALL if healthy or draw(_mostly(True)) else frozenset({"gsm"})
        mine = [(i, s) for i, s in enumerate(shards) if s.owner == name and s.draining]
        acked = draw(st.sets(st.sampled_from(mine))) if mine else set()
        vs[name] = view(
            name,
            alive=healthy or draw(_mostly(True)),
            session=sessions[name],
            up=up,
            stable=up if draw(_mostly(True)) else frozenset(),
            # mostly the right drain id; else one of another drain, or the old epoch-style ack
            drained={
                ("eep", i, draw(st.sampled_from([s.drain_id] * 3 + [s.drain_id - 1, s.epoch])))
                for i, s in acked
            },
            admin_drained=draw(_mostly(False)),
        )
    policy = PlacementPolicy(
        handback_batch_size=draw(st.integers(min_value=1, max_value=5)),
        pinned=draw(st.sampled_from([{}, {}, {}, {"eep": "a"}, {"eep": "b"}])),
    )
    return current, vs, policy


@given(states())
@settings(max_examples=200)
def test_no_decision_ever_takes_a_shard_from_a_live_valid_owner_directly(
    state: tuple[Ownership, dict[str, SiteView], PlacementPolicy],
) -> None:
    current, vs, policy = state
    d = decide_component(TOPO, current, vs, policy)
    if d is not None:
        check_decision_is_safe(current, d, vs, policy)


@given(
    st.lists(st.sampled_from(["a", "b", None]), min_size=1, max_size=16),
    st.integers(min_value=1, max_value=5),
    st.booleans(),
)
@settings(max_examples=60)
def test_from_any_start_the_controller_comes_to_rest_even(
    start: list[str | None], batch_size: int, a_alive: bool
) -> None:
    topo = default_topology(components=("eep",), shards_per_component=len(start))
    current = {"eep": owned("eep", start, epoch=1)}
    sites = {"a": {"alive": a_alive}, "b": {}}
    policy = PlacementPolicy(handback_batch_size=batch_size)
    run_to_rest(topo, current, sites, policy)  # checks every decision on the way
    live = ["a", "b"] if a_alive else ["b"]
    assert is_even(owners_of(current["eep"]), live, {"a": 1.0, "b": 1.0})
    assert not any(a.draining for a in current["eep"].shards)
