"""Epochs as fencing tokens: the ownership document, reassignments and the sink's fence."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.fencing import (
    Assignment,
    EpochFence,
    Ownership,
    reassign,
    set_draining,
    unowned,
)

SITES = ("a", "b", "c")


@st.composite
def assignments(draw: st.DrawFn, *, max_epoch: int) -> Assignment:
    """A shard as the core writes it: a drain has an id in 1..max_epoch, no drain has id 0."""
    owner = draw(st.one_of(st.none(), st.sampled_from(SITES)))
    draining = owner is not None and max_epoch > 0 and draw(st.booleans())
    return Assignment(
        owner=owner,
        epoch=draw(st.integers(min_value=0, max_value=max_epoch)),
        session=draw(st.integers(min_value=0, max_value=50)),
        draining=draining,
        drain_id=draw(st.integers(min_value=1, max_value=max_epoch)) if draining else 0,
    )


@st.composite
def ownerships(draw: st.DrawFn, *, max_shards: int = 12) -> Ownership:
    max_epoch = draw(st.integers(min_value=0, max_value=1000))
    shards = draw(st.lists(assignments(max_epoch=max_epoch), min_size=1, max_size=max_shards))
    component = draw(st.sampled_from(("eep", "eap", "backbone")))
    trace_id = draw(st.text(alphabet="0123456789abcdef", max_size=32))
    span_id = draw(st.text(alphabet="0123456789abcdef", max_size=16))
    return Ownership(component, tuple(shards), max_epoch, trace_id, span_id)


def _doc() -> dict[str, Any]:
    return {
        "component": "eep",
        "max_epoch": 3,
        "trace_id": "t1",
        "span_id": "",
        "shards": [
            {"owner": "a", "epoch": 3, "session": 1, "draining": False, "drain_id": 0},
            {"owner": None, "epoch": 0, "session": 0, "draining": False, "drain_id": 0},
        ],
    }


# --- the ownership document ------------------------------------------------------------


@given(ownerships())
@settings(max_examples=60)
def test_ownership_doc_round_trip(ownership: Ownership) -> None:
    doc = ownership.to_doc()
    assert Ownership.from_doc(doc) == ownership
    assert Ownership.from_doc(json.loads(json.dumps(doc))) == ownership


def test_ownership_doc_shape() -> None:
    ownership = Ownership("eep", (Assignment("a", 3, 1), Assignment(None, 0)), 3, "t1")
    assert ownership.to_doc() == _doc()


def test_ownership_doc_shape_of_a_draining_shard() -> None:
    ownership = Ownership("eep", (Assignment("a", 3, 1, True, 5), Assignment(None, 0)), 5, "t1")
    doc = _doc()
    doc["max_epoch"] = 5
    doc["shards"][0].update(draining=True, drain_id=5)
    assert ownership.to_doc() == doc
    assert Ownership.from_doc(doc) == ownership


def test_doc_without_optional_fields_uses_defaults() -> None:
    doc = {"component": "eep", "max_epoch": 2, "shards": [{"owner": "b", "epoch": 2}]}
    assert Ownership.from_doc(doc) == Ownership("eep", (Assignment("b", 2, 0, False, 0),), 2, "")


@pytest.mark.parametrize("field", ["component", "max_epoch", "shards"])
def test_missing_top_level_field_is_named(field: str) -> None:
    doc = _doc()
    del doc[field]
    with pytest.raises(ValueError, match=f"^ownership document lacks field '{field}'$"):
        Ownership.from_doc(doc)


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = _doc()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_with(("max_epoch",), -1), "field 'max_epoch' must be a non-negative integer, got -1"),
        (_with(("max_epoch",), "3"), "field 'max_epoch' must be a non-negative integer, got '3'"),
        (_with(("max_epoch",), 3.0), "field 'max_epoch' must be a non-negative integer, got 3.0"),
        (_with(("max_epoch",), True), "field 'max_epoch' must be a non-negative integer, got True"),
        (_with(("max_epoch",), None), "field 'max_epoch' must be a non-negative integer"),
        (_with(("shards",), {"0": {}}), "'shards' must be a list"),
        (_with(("shards", 1), "a"), "shard 1 must be an object, got 'a'"),
        (_with(("shards", 0, "owner"), 7), "shard 0 owner must be a site name or null, got 7"),
        (_with(("shards", 0, "epoch"), -2), "field 'shards[0].epoch' must be a non-negative"),
        (_with(("shards", 1, "epoch"), "0"), "field 'shards[1].epoch' must be a non-negative"),
        (_with(("shards", 1, "epoch"), False), "field 'shards[1].epoch' must be a non-negative"),
        (_with(("shards", 0, "session"), -1), "field 'shards[0].session' must be a non-negative"),
        (_with(("shards", 0, "session"), True), "field 'shards[0].session' must be a non-negative"),
        (_with(("shards", 0, "session"), 1.5), "field 'shards[0].session' must be a non-negative"),
        (_with(("shards", 0, "epoch"), 4), "ownership of eep: a shard epoch exceeds max_epoch"),
        (_with(("shards", 0, "drain_id"), -1), "field 'shards[0].drain_id' must be a non-negative"),
        (
            _with(("shards", 0, "drain_id"), "1"),
            "field 'shards[0].drain_id' must be a non-negative",
        ),
        (
            _with(("shards", 0, "drain_id"), 1.0),
            "field 'shards[0].drain_id' must be a non-negative",
        ),
        (
            _with(("shards", 1, "drain_id"), True),
            "field 'shards[1].drain_id' must be a non-negative",
        ),
        (
            _with(("shards", 1, "drain_id"), None),
            "field 'shards[1].drain_id' must be a non-negative",
        ),
        (_with(("shards", 0, "drain_id"), 4), "ownership of eep: a shard epoch exceeds max_epoch"),
        (_with(("trace_id",), 7), "field 'trace_id' must be a string, got 7"),
        (_with(("trace_id",), None), "field 'trace_id' must be a string, got None"),
        (_with(("span_id",), 7), "field 'span_id' must be a string, got 7"),
        (_with(("component",), ""), "field 'component' must be a non-empty string, got ''"),
    ],
)
def test_malformed_doc_is_a_value_error_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Ownership.from_doc(doc)
    assert message in str(err.value)


def test_missing_shard_epoch_is_named() -> None:
    doc = _doc()
    del doc["shards"][0]["epoch"]
    with pytest.raises(ValueError, match=r"'shards\[0\]\.epoch' must be a non-negative integer"):
        Ownership.from_doc(doc)


# These three used to be coerced (bool(), str()) or to raise TypeError.
@pytest.mark.parametrize("value", ["false", "no", 1, [0], None])
def test_non_boolean_draining_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError) as err:
        Ownership.from_doc(_with(("shards", 0, "draining"), value))
    assert str(err.value) == f"field 'shards[0].draining' must be true or false, got {value!r}"


@pytest.mark.parametrize("value", [5, None, ["eep"]])
def test_non_string_component_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError) as err:
        Ownership.from_doc(_with(("component",), value))
    assert str(err.value) == f"field 'component' must be a non-empty string, got {value!r}"


@pytest.mark.parametrize(
    ("doc", "kind"), [([], "list"), ("eep", "str"), (None, "NoneType"), (3, "int")]
)
def test_non_object_doc_is_a_value_error(doc: Any, kind: str) -> None:
    with pytest.raises(ValueError) as err:
        Ownership.from_doc(doc)
    assert str(err.value) == f"an ownership document must be an object, got {kind}"


# --- reassign --------------------------------------------------------------------------


def test_unowned_component_has_no_owner_and_epoch_zero() -> None:
    ownership = unowned("eep", 4)
    assert ownership == Ownership("eep", (Assignment(None, 0, 0, False),) * 4, 0)
    assert ownership.counts(["a", "b"]) == {"a": 0, "b": 0}


def test_counts_and_owned_by() -> None:
    ownership = Ownership(
        "eep", (Assignment("a", 1), Assignment("c", 1), Assignment("a", 1), Assignment(None, 0)), 1
    )
    assert ownership.counts(["a", "b"]) == {"a": 2, "b": 0, "c": 1}
    assert ownership.owned_by("a") == [0, 2]
    assert ownership.owner(1) == "c"
    assert ownership.owner(3) is None


@given(ownerships(), st.data())
@settings(max_examples=60)
def test_reassign_moved_shards_get_the_next_epoch_and_others_keep_theirs(
    ownership: Ownership, data: st.DataObject
) -> None:
    n = len(ownership.shards)
    moves = data.draw(
        st.dictionaries(
            st.integers(min_value=0, max_value=n - 1),
            st.tuples(st.one_of(st.none(), st.sampled_from(SITES)), st.integers(0, 50)),
            min_size=1,
        )
    )
    new = reassign(ownership, moves, trace_id="t-new")
    assert new.component == ownership.component
    assert new.max_epoch == ownership.max_epoch + 1
    assert new.trace_id == "t-new"
    for i, (old, now) in enumerate(zip(ownership.shards, new.shards, strict=True)):
        if i in moves:
            owner, session = moves[i]
            assert now == Assignment(owner, ownership.max_epoch + 1, session, False)
            assert now.epoch > old.epoch
        else:
            assert now == old


def test_reassign_keeps_the_trace_id_when_none_is_given() -> None:
    ownership = Ownership("eep", (Assignment("a", 1),), 1, "t-old", "s-old")
    assert reassign(ownership, {0: ("b", 2)}).trace_id == "t-old"
    assert reassign(ownership, {0: ("b", 2)}).span_id == "s-old"
    assert reassign(ownership, {0: ("b", 2)}, trace_id="t-new").span_id == ""


def test_ownership_doc_without_span_id_still_parses() -> None:
    doc = _doc()
    del doc["span_id"]
    assert Ownership.from_doc(doc).span_id == ""


def test_reassign_without_moves_changes_nothing() -> None:
    ownership = Ownership("eep", (Assignment("a", 1),), 1)
    assert reassign(ownership, {}) is ownership


def test_regrant_to_the_same_owner_and_session_still_bumps_the_epoch() -> None:
    ownership = Ownership("eep", (Assignment("a", 4, 2), Assignment("b", 5, 1)), 5)
    new = reassign(ownership, {0: ("a", 2)})
    assert new.shards[0] == Assignment("a", 6, 2)
    assert new.shards[1] == Assignment("b", 5, 1)
    assert new.max_epoch == 6


def test_reassign_clears_draining_of_moved_shards_only() -> None:
    ownership = Ownership(
        "eep", (Assignment("a", 1, 1, True, 2), Assignment("a", 1, 1, True, 2)), 2
    )
    new = reassign(ownership, {0: ("b", 3)})
    assert new.shards == (Assignment("b", 3, 3, False, 0), Assignment("a", 1, 1, True, 2))
    assert new.max_epoch == 3


@pytest.mark.parametrize("index", [-1, 2, 100])
def test_reassign_of_an_unknown_shard_is_a_value_error(index: int) -> None:
    ownership = Ownership("eep", (Assignment("a", 1), Assignment("b", 1)), 1)
    with pytest.raises(ValueError, match=f"^eep: no shard {index}$"):
        reassign(ownership, {index: ("a", 1)})


@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.dictionaries(
                    st.integers(min_value=0, max_value=n - 1),
                    st.tuples(st.sampled_from(SITES), st.integers(0, 5)),
                    min_size=1,
                ),
                min_size=1,
                max_size=15,
            ),
        )
    )
)
@settings(max_examples=60)
def test_epochs_per_shard_strictly_increase_over_any_sequence_of_reassigns(
    case: tuple[int, list[dict[int, tuple[str, int]]]],
) -> None:
    n, sequence = case
    ownership = unowned("eep", n)
    history: list[list[int]] = [[0] for _ in range(n)]
    for step, moves in enumerate(sequence, start=1):
        ownership = reassign(ownership, moves)
        assert ownership.max_epoch == step
        for i in moves:
            history[i].append(ownership.shards[i].epoch)
        assert all(a.epoch <= ownership.max_epoch for a in ownership.shards)
        # the document stays valid after every step
        assert Ownership.from_doc(ownership.to_doc()) == ownership
    for epochs in history:
        assert all(x < y for x, y in itertools.pairwise(epochs))
    # no two decisions ever share an epoch: every granted epoch is unique per decision
    assert sorted({e for h in history for e in h[1:]}) == list(range(1, len(sequence) + 1))


# --- set_draining ----------------------------------------------------------------------


def test_set_draining_keeps_owner_epoch_and_session() -> None:
    ownership = Ownership(
        "eep", (Assignment("a", 2, 1), Assignment("b", 3, 4), Assignment(None, 0)), 3, "t"
    )
    drained = set_draining(ownership, [0, 1, 2], draining=True)
    assert drained.shards == (
        Assignment("a", 2, 1, True, 4),
        Assignment("b", 3, 4, True, 4),
        Assignment(None, 0, 0, False, 0),  # an unowned shard has nothing to drain
    )
    assert drained.max_epoch == 4  # the drain id takes the next number of the counter
    assert drained.component == "eep"
    assert drained.trace_id == "t"
    assert Ownership.from_doc(drained.to_doc()) == drained
    cancelled = set_draining(drained, [1], draining=False)
    assert cancelled.shards == (
        Assignment("a", 2, 1, True, 4),
        Assignment("b", 3, 4, False, 0),
        Assignment(None, 0, 0, False, 0),
    )
    assert cancelled.max_epoch == 4  # cancelling takes no number
    assert cancelled.trace_id == "t"


def test_a_new_drain_gets_a_new_id_and_shards_already_draining_keep_theirs() -> None:
    ownership = Ownership("eep", (Assignment("a", 2, 1), Assignment("a", 2, 1)), 2)
    first = set_draining(ownership, [0], draining=True)
    assert first.shards == (Assignment("a", 2, 1, True, 3), Assignment("a", 2, 1))
    assert first.max_epoch == 3
    second = set_draining(first, [0, 1], draining=True)
    assert second.shards == (Assignment("a", 2, 1, True, 3), Assignment("a", 2, 1, True, 4))
    assert second.max_epoch == 4


def test_a_drain_that_starts_nothing_new_changes_nothing() -> None:
    ownership = Ownership(
        "eep", (Assignment("a", 2, 1, True, 3), Assignment(None, 0), Assignment("b", 1, 1)), 3
    )
    assert set_draining(ownership, [0, 1], draining=True) is ownership
    assert set_draining(ownership, [], draining=True) is ownership


def test_a_drain_after_a_cancel_has_a_different_id() -> None:
    ownership = Ownership("eep", (Assignment("a", 2, 1),), 2)
    first = set_draining(ownership, [0], draining=True)
    cancelled = set_draining(first, [0], draining=False)
    again = set_draining(cancelled, [0], draining=True)
    assert first.shards[0].drain_id == 3
    assert cancelled.shards[0] == Assignment("a", 2, 1, False, 0)
    assert again.shards[0] == Assignment("a", 2, 1, True, 4)
    assert again.max_epoch == 4


def test_drain_ids_and_epochs_never_repeat() -> None:
    ownership = unowned("eep", 3)
    used: list[int] = []
    ownership = reassign(ownership, {0: ("a", 1), 1: ("a", 1), 2: ("b", 1)})
    used.append(ownership.max_epoch)
    ownership = set_draining(ownership, [0], draining=True)
    used.append(ownership.shards[0].drain_id)
    ownership = reassign(ownership, {0: ("b", 1)})
    used.append(ownership.shards[0].epoch)
    ownership = set_draining(ownership, [1, 2], draining=True)
    used.append(ownership.shards[1].drain_id)
    assert ownership.shards[2].drain_id == ownership.shards[1].drain_id  # one decision, one id
    ownership = set_draining(ownership, [1, 2], draining=False)
    ownership = set_draining(ownership, [2], draining=True)
    used.append(ownership.shards[2].drain_id)
    assert used == [1, 2, 3, 4, 5]
    assert ownership.max_epoch == 5


@given(ownerships(), st.data())
@settings(max_examples=40)
def test_set_draining_never_changes_owner_epoch_or_session(
    ownership: Ownership, data: st.DataObject
) -> None:
    indexes = data.draw(st.sets(st.integers(0, len(ownership.shards) - 1)))
    flag = data.draw(st.booleans())
    new = set_draining(ownership, indexes, draining=flag)
    assert new.component == ownership.component
    assert new.trace_id == ownership.trace_id
    fresh = {
        i
        for i in indexes
        if ownership.shards[i].owner is not None and not ownership.shards[i].draining
    }
    if flag and fresh:
        assert new.max_epoch == ownership.max_epoch + 1
    elif flag:
        assert new is ownership
    else:
        assert new.max_epoch == ownership.max_epoch
    for i, (old, now) in enumerate(zip(ownership.shards, new.shards, strict=True)):
        assert (now.owner, now.epoch, now.session) == (old.owner, old.epoch, old.session)
        if flag and i in fresh:
            assert (now.draining, now.drain_id) == (True, new.max_epoch)
        elif not flag and i in indexes and old.owner is not None:
            assert (now.draining, now.drain_id) == (False, 0)
        else:
            assert now == old
    # the result is a valid document
    assert Ownership.from_doc(new.to_doc()) == new


# --- EpochFence ------------------------------------------------------------------------


def test_fence_refuses_lower_epochs_and_accepts_equal_or_higher() -> None:
    fence = EpochFence()
    assert fence.highest("eep", 0) == 0
    assert fence.admit("eep", 0, 3)
    assert fence.highest("eep", 0) == 3
    assert fence.admit("eep", 0, 3)
    assert not fence.admit("eep", 0, 2)
    assert fence.highest("eep", 0) == 3
    assert fence.admit("eep", 0, 5)
    assert fence.highest("eep", 0) == 5
    assert not fence.admit("eep", 0, 4)
    # other shards and components are independent
    assert fence.admit("eep", 1, 1)
    assert fence.admit("eap", 0, 1)


def test_fence_learns_epochs_from_ownership_documents() -> None:
    fence = EpochFence()
    fence.learn("eep", 0, 7)
    fence.learn("eep", 0, 4)  # never lowers
    assert fence.highest("eep", 0) == 7
    assert not fence.admit("eep", 0, 6)
    assert fence.admit("eep", 0, 7)


def test_disabled_fence_admits_everything_but_still_records() -> None:
    fence = EpochFence(enforce=False)
    assert fence.admit("eep", 0, 5)
    assert fence.admit("eep", 0, 1)
    assert fence.highest("eep", 0) == 5
    assert fence.admit("eep", 0, 9)
    assert fence.highest("eep", 0) == 9


@given(
    st.lists(
        st.tuples(st.sampled_from(("eep", "eap")), st.integers(0, 2), st.integers(0, 10)),
        max_size=60,
    )
)
@settings(max_examples=80)
def test_accepted_epochs_per_shard_never_decrease(
    admits: list[tuple[str, int, int]],
) -> None:
    fence = EpochFence()
    accepted: dict[tuple[str, int], list[int]] = {}
    for component, index, epoch in admits:
        before = fence.highest(component, index)
        ok = fence.admit(component, index, epoch)
        assert ok == (epoch >= before)
        assert fence.highest(component, index) == max(before, epoch)
        if ok:
            accepted.setdefault((component, index), []).append(epoch)
    for epochs in accepted.values():
        assert epochs == sorted(epochs)


@given(st.lists(st.integers(0, 10), max_size=30))
@settings(max_examples=40)
def test_disabled_fence_admits_every_interleaving(epochs: list[int]) -> None:
    fence = EpochFence(enforce=False)
    assert all(fence.admit("eep", 0, e) for e in epochs)
    assert fence.highest("eep", 0) == max(epochs, default=0)


@pytest.mark.parametrize("index", [-1, 2, 100])
def test_set_draining_of_an_unknown_shard_is_a_value_error(index: int) -> None:
    ownership = Ownership("eep", (Assignment("a", 1, 1), Assignment("b", 1, 1)), 1)
    with pytest.raises(ValueError, match=f"^eep: no shard {index}$"):
        set_draining(ownership, [index], draining=True)
