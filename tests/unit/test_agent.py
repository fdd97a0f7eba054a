"""The site agent: lease sessions, self-fencing, the failsafe and which shards it serves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.core.agent import LeaseRecord, SiteAgent
from failover.core.fencing import Assignment, Ownership
from failover.core.quorum import LeaseObserver, LeaseTiming

TIMING = LeaseTiming()  # renew 0.25, deadline 1.0, duration 1.6, failsafe window 0.75
UP = ("eep", "gsm")


def agent(*, fencing_enabled: bool = True) -> SiteAgent:
    return SiteAgent("a", timing=TIMING, peers=["a", "b"], fencing_enabled=fencing_enabled)


def renew(site: SiteAgent, at_s: float) -> LeaseRecord:
    record = site.lease_record(wall_s=1_700_000_000.0 + at_s, components_up=UP)
    site.renewed(record, started_at_s=at_s)
    return record


def serves(
    site: SiteAgent,
    assignment: Assignment,
    *,
    now_s: float,
    component_up: bool = True,
    component: str = "eep",
    index: int = 0,
) -> bool:
    return site.may_serve(
        assignment, component=component, index=index, now_s=now_s, component_up=component_up
    )


def serving_agent() -> SiteAgent:
    site = agent()
    renew(site, 0.0)
    return site


# --- the lease record -------------------------------------------------------------------


def test_a_new_agent_is_fenced_and_its_first_renewal_opens_session_1() -> None:
    site = agent()
    assert site.fenced
    assert site.session == 0
    assert not site.check(0.0)
    record = site.lease_record(wall_s=100.0, components_up=["gsm", "eep"], drained=[("eep", 3, 2)])
    assert record == LeaseRecord(
        holder="a",
        session=1,
        renew_count=1,
        renewed_at_wall_s=100.0,
        lease_duration_s=1.6,
        components_up=("eep", "gsm"),
        drained=(("eep", 3, 2),),
    )
    assert site.fenced  # nothing changes until the write succeeded
    site.renewed(record, started_at_s=5.0)
    assert not site.fenced
    assert site.session == 1
    assert site.renew_count == 1
    assert site.last_renew_start_s == 5.0
    assert site.store_ok
    assert site.check(5.0)


def test_renewals_keep_the_session_and_count_up() -> None:
    site = serving_agent()
    second = renew(site, 0.25)
    third = renew(site, 0.5)
    assert (second.session, second.renew_count) == (1, 2)
    assert (third.session, third.renew_count) == (1, 3)
    assert second.summary() != third.summary()
    assert third.summary() == ("a", 1, 3)


def test_summary_changes_with_every_renewal_and_every_session() -> None:
    r = LeaseRecord("a", 1, 1, 0.0, 1.6)
    assert r.summary() == ("a", 1, 1)
    assert LeaseRecord("a", 2, 1, 0.0, 1.6).summary() != r.summary()
    assert LeaseRecord("a", 1, 1, 9.0, 1.6, store_ok=False).summary() == r.summary()


# --- self-fencing -----------------------------------------------------------------------


def test_check_fences_after_renew_deadline_without_renewal() -> None:
    site = serving_agent()
    assert site.check(0.5)
    assert site.check(1.0)  # exactly the deadline
    assert not site.check(1.01)
    assert site.fenced
    assert site.fence_count == 1
    assert not site.check(0.5)  # fenced stays fenced, whatever the clock says
    assert site.fence_count == 1


def test_after_a_fence_the_next_lease_opens_a_new_session() -> None:
    site = serving_agent()
    renew(site, 0.25)
    assert not site.check(1.3)
    record = site.lease_record(wall_s=2.0, components_up=UP)
    assert record.session == 2
    assert record.renew_count == 3
    site.renewed(record, started_at_s=2.0)
    assert site.session == 2
    assert not site.fenced
    assert site.check(2.0)
    # grants of the old session are void even though the site serves again
    assert not serves(site, Assignment("a", 4, 1), now_s=2.0)
    assert serves(site, Assignment("a", 5, 2), now_s=2.0)


def test_a_failed_store_request_does_not_count_as_a_renewal() -> None:
    site = serving_agent()
    site.store_failed()
    assert not site.store_ok
    assert site.last_renew_start_s == 0.0
    assert site.check(1.0)
    assert not site.check(1.5)


def test_the_deadline_counts_from_the_renewal_start_not_its_completion() -> None:
    site = serving_agent()
    record = site.lease_record(wall_s=0.0, components_up=UP)
    site.renewed(record, started_at_s=0.4)  # the write took long; it started at 0.4
    assert site.check(1.4)
    assert not site.check(1.41)


def test_a_renewal_acknowledged_after_the_fence_does_not_revive_the_old_session() -> None:
    # Used to un-fence into the record's (old) session and serve pre-fence grants again.
    site = serving_agent()  # session 1, renewed at 0.0 (applied at once)
    controller = LeaseObserver(lease_duration_s=TIMING.lease_duration_s)
    controller.observe(("a", 1, 1), 0.0)
    slow = site.lease_record(wall_s=0.75, components_up=UP)  # started at 0.75, session 1
    assert slow.session == 1
    assert not site.check(1.01)  # fenced
    site.store_failed()
    controller.observe(("a", 1, 1), 1.61)  # the slow write has not landed yet
    assert controller.expired(1.61)  # so the majority may take the shards over now
    site.renewed(slow, started_at_s=0.75)  # the slow write lands and is acknowledged at 1.65
    old_grant = Assignment("a", 3, 1)
    assert not serves(site, old_grant, now_s=1.65)
    assert site.fenced
    assert site.session == 1
    assert site.last_renew_start_s == 0.0  # the stale renewal does not count as one
    assert not site.check(1.65)
    # it refreshes what it may: the count and the store's reachability
    assert site.renew_count == 2
    assert site.store_ok
    assert site.fence_count == 1
    # the next lease opens a new session after the stale one's count
    record = site.lease_record(wall_s=1.7, components_up=UP)
    assert (record.session, record.renew_count) == (2, 3)
    site.renewed(record, started_at_s=1.7)
    assert not site.fenced
    assert site.session == 2
    assert not serves(site, old_grant, now_s=1.7)
    assert serves(site, Assignment("a", 4, 2), now_s=1.7)


def test_renewals_acknowledged_out_of_order_never_lower_the_count() -> None:
    site = serving_agent()
    first = site.lease_record(wall_s=0.25, components_up=UP)
    site.renewed(first, started_at_s=0.25)
    second = site.lease_record(wall_s=0.5, components_up=UP)
    site.renewed(second, started_at_s=0.5)
    assert site.renew_count == 3
    site.renewed(first, started_at_s=0.25)  # a duplicate, late acknowledgement
    assert site.renew_count == 3
    assert site.lease_record(wall_s=0.75, components_up=UP).renew_count == 4


def test_fencing_disabled_never_fences() -> None:
    site = agent(fencing_enabled=False)
    assert not site.check(0.0)  # it still needs a first lease
    renew(site, 0.0)
    site.store_failed()
    for now in (0.5, 1.01, 10.0, 1000.0):
        assert site.check(now)
    assert not site.fenced
    assert site.fence_count == 0
    assert serves(site, Assignment("a", 1, 1), now_s=1000.0)


# --- the failsafe -----------------------------------------------------------------------


def test_failsafe_keeps_serving_while_the_peer_confirms_the_store_is_down() -> None:
    site = serving_agent()
    site.store_failed()
    for now in (0.9, 1.6, 2.3, 3.0):
        site.heard_peer("b", store_ok=False, now_s=now)
        assert site.check(now + 0.7)
    assert site.fence_count == 0
    # the peer's confirmations stop: fenced once the last one is older than 0.75 s
    assert site.check(3.75)
    assert not site.check(3.76)
    assert site.fenced


def test_no_failsafe_when_the_peer_reaches_the_store() -> None:
    site = serving_agent()
    site.store_failed()
    site.heard_peer("b", store_ok=True, now_s=1.0)
    assert site.peers == {"b": None}  # only "store down" reports are kept
    assert not site.failsafe(1.1)
    assert not site.check(1.1)


def test_a_peer_with_the_store_back_ends_the_failsafe_when_its_last_down_report_ages() -> None:
    site = serving_agent()
    site.store_failed()
    site.heard_peer("b", store_ok=False, now_s=1.0)
    site.heard_peer("b", store_ok=True, now_s=1.2)  # b has the store back
    assert site.check(1.5)
    assert site.check(1.75)
    assert not site.check(1.76)  # the "down" report from 1.0 is now too old
    assert site.fenced


def test_no_failsafe_while_the_agent_still_reaches_the_store() -> None:
    site = serving_agent()
    site.heard_peer("b", store_ok=False, now_s=1.0)
    assert site.store_ok
    assert not site.check(1.1)


def test_no_failsafe_before_any_peer_was_heard() -> None:
    site = serving_agent()
    site.store_failed()
    assert site.peers == {"b": None}
    assert not site.check(1.1)


def test_reports_from_unknown_peers_and_itself_are_ignored() -> None:
    site = serving_agent()
    site.store_failed()
    site.heard_peer("a", store_ok=False, now_s=1.0)
    site.heard_peer("z", store_ok=False, now_s=1.0)
    assert site.peers == {"b": None}
    assert not site.check(1.1)


# --- which shards it serves -------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "component_up", "expected"),
    [
        (Assignment("a", 3, 1), True, True),
        (Assignment("a", 3, 1), False, False),  # the component is down here
        (Assignment("b", 3, 1), True, False),  # someone else's shard
        (Assignment(None, 0, 0), True, False),
        (Assignment("a", 3, 2), True, False),  # another session
        (Assignment("a", 3, 0), True, False),
        (Assignment("a", 3, 1, draining=True, drain_id=4), True, False),  # waits for transfer
    ],
)
def test_may_serve(assignment: Assignment, component_up: bool, expected: bool) -> None:
    site = serving_agent()
    assert serves(site, assignment, now_s=0.5, component_up=component_up) is expected


def test_may_serve_is_false_once_fenced() -> None:
    site = serving_agent()
    grant = Assignment("a", 3, 1)
    assert serves(site, grant, now_s=1.0)
    assert not serves(site, grant, now_s=1.01)
    assert site.fenced
    assert not serves(site, grant, now_s=0.5)


def test_drained_lists_the_draining_shards_it_owns_in_its_session() -> None:
    site = serving_agent()
    eep = Ownership(
        "eep",
        (
            Assignment("a", 4, 1, draining=True, drain_id=6),
            Assignment("a", 4, 1),
            Assignment("b", 5, 1, draining=True, drain_id=6),  # not ours
            Assignment("a", 2, 1, draining=True, drain_id=5),
            Assignment("a", 3, 7, draining=True, drain_id=6),  # an old session's grant
        ),
        6,
    )
    gsm = Ownership("gsm", (Assignment("a", 9, 1, draining=True, drain_id=10),), 10)
    # acknowledged by drain id, never by the shard's epoch
    assert site.drained([eep, gsm]) == [("eep", 0, 6), ("eep", 3, 5), ("gsm", 0, 10)]
    assert site.drained([]) == []


def test_the_drained_ack_reaches_the_lease_record() -> None:
    site = serving_agent()
    eep = Ownership(
        "eep", (Assignment("a", 4, 1, draining=True, drain_id=5), Assignment("a", 4, 1)), 5
    )
    record = site.lease_record(wall_s=1.0, components_up=UP, drained=site.drained([eep]))
    assert record.drained == (("eep", 0, 5),)
    assert LeaseRecord.from_doc(record.to_doc()).drained == (("eep", 0, 5),)
    assert site.acked_drains == {("eep", 0, 5)}


# --- draining shards and the failsafe ----------------------------------------------------


def _in_failsafe(site: SiteAgent, now_s: float) -> None:
    site.store_failed()
    site.heard_peer("b", store_ok=False, now_s=now_s)


def test_a_draining_shard_is_not_served_while_the_store_is_up() -> None:
    site = serving_agent()
    draining = Assignment("a", 3, 1, draining=True, drain_id=4)
    assert not serves(site, draining, now_s=0.5)
    assert not site.failsafe(0.5)
    site.heard_peer("b", store_ok=False, now_s=0.5)  # only the peer lost the store
    assert not site.failsafe(0.5)
    assert not serves(site, draining, now_s=0.5)


def test_in_failsafe_an_unacknowledged_draining_shard_is_served_on() -> None:
    site = serving_agent()
    _in_failsafe(site, 1.5)
    assert site.failsafe(1.5)
    draining = Assignment("a", 3, 1, draining=True, drain_id=4)
    assert serves(site, draining, now_s=1.5)
    # but only while the failsafe holds
    assert not serves(site, draining, now_s=2.3)
    assert site.fenced


def test_in_failsafe_an_acknowledged_drain_stays_stopped() -> None:
    site = serving_agent()
    ack = site.lease_record(wall_s=0.25, components_up=UP, drained=[("eep", 3, 4)])
    site.renewed(ack, started_at_s=0.25)
    assert site.acked_drains == {("eep", 3, 4)}
    _in_failsafe(site, 1.5)
    draining = Assignment("a", 2, 1, draining=True, drain_id=4)
    assert not serves(site, draining, now_s=1.5, index=3)
    assert serves(site, draining, now_s=1.5, index=2)  # another shard: not acknowledged
    assert serves(site, draining, now_s=1.5, component="gsm", index=3)
    # another drain of the same shard (a new drain id) is not acknowledged either,
    # even when the shard's epoch happens to equal the acknowledged number
    again = Assignment("a", 4, 1, draining=True, drain_id=5)
    assert serves(site, again, now_s=1.5, index=3)


def test_an_ack_of_a_cancelled_drain_does_not_stop_a_later_drain_of_the_shard() -> None:
    site = serving_agent()
    first = Ownership("eep", (Assignment("a", 2, 1, draining=True, drain_id=3),), 3)
    site.renewed(
        site.lease_record(wall_s=0.25, components_up=UP, drained=site.drained([first])),
        started_at_s=0.25,
    )
    assert site.acked_drains == {("eep", 0, 3)}
    # the drain is cancelled (drain id cleared), the shard is served as usual
    cancelled = Ownership("eep", (Assignment("a", 2, 1),), 3)
    assert serves(site, cancelled.shards[0], now_s=0.5)
    assert site.drained([cancelled]) == []
    # a later drain of the same shard has a new id: it needs a new acknowledgement
    later = Ownership("eep", (Assignment("a", 2, 1, draining=True, drain_id=4),), 4)
    assert site.drained([later]) == [("eep", 0, 4)]
    _in_failsafe(site, 1.0)
    assert serves(site, later.shards[0], now_s=1.0)  # in failsafe: not acknowledged yet
    site.lease_record(wall_s=1.0, components_up=UP, drained=site.drained([later]))
    assert not serves(site, later.shards[0], now_s=1.0)  # now it is


def test_an_ack_counts_as_given_once_written_into_a_lease_even_if_the_write_fails() -> None:
    site = serving_agent()
    assert site.acked_drains == set()
    site.lease_record(wall_s=0.25, components_up=UP, drained=[("eep", 3, 4)])
    site.store_failed()  # unavailable or outcome unknown: it may have landed
    assert site.acked_drains == {("eep", 3, 4)}
    assert site.last_renew_start_s == 0.0  # still not a renewal
    site.heard_peer("b", store_ok=False, now_s=1.5)
    assert site.failsafe(1.5)
    acked = Assignment("a", 2, 1, draining=True, drain_id=4)
    assert not serves(site, acked, now_s=1.5, index=3)
    assert serves(site, acked, now_s=1.5, index=2)  # not listed: served on in failsafe


def test_only_a_renewal_ends_the_failsafe() -> None:
    site = serving_agent()
    _in_failsafe(site, 1.2)
    assert site.failsafe(1.2)
    assert site.check(1.2)
    site.renewed(site.lease_record(wall_s=1.3, components_up=UP), started_at_s=1.3)
    assert site.store_ok
    assert not site.failsafe(1.3)
    assert site.check(2.3)
    assert not site.check(2.31)  # the store is back: the ordinary deadline applies again


def test_drained_leaves_out_shards_still_busy() -> None:
    site = serving_agent()
    eep = Ownership(
        "eep",
        (
            Assignment("a", 4, 1, draining=True, drain_id=5),
            Assignment("a", 4, 1, draining=True, drain_id=5),
        ),
        5,
    )
    gsm = Ownership("gsm", (Assignment("a", 2, 1, draining=True, drain_id=3),), 3)
    busy = {("eep", 0), ("gsm", 5)}
    assert site.drained([eep, gsm], busy=busy) == [("eep", 1, 5), ("gsm", 0, 3)]


# --- a restarted agent ----------------------------------------------------------------


def test_a_restarted_agent_continues_the_stored_numbering() -> None:
    site = agent()
    site.continue_from(LeaseRecord("a", 4, 90, 0.0, 1.6))
    record = site.lease_record(wall_s=1.0, components_up=UP)
    assert (record.session, record.renew_count) == (5, 91)
    site.renewed(record, started_at_s=1.0)
    assert site.session == 5
    assert not serves(site, Assignment("a", 7, 4), now_s=1.0)  # the old process's grant
    assert serves(site, Assignment("a", 8, 5), now_s=1.0)


def test_continue_from_never_lowers_and_ignores_other_holders() -> None:
    site = serving_agent()  # session 1, not fenced
    site.continue_from(LeaseRecord("a", 9, 99, 0.0, 1.6))
    assert (site.session, site.renew_count) == (1, 1)  # a serving agent keeps its own
    fresh = agent()
    fresh.continue_from(LeaseRecord("b", 9, 99, 0.0, 1.6))
    assert (fresh.session, fresh.renew_count) == (0, 0)
    fresh.continue_from(LeaseRecord("a", 3, 10, 0.0, 1.6))
    fresh.continue_from(LeaseRecord("a", 2, 50, 0.0, 1.6))
    assert (fresh.session, fresh.renew_count) == (3, 50)


# --- the lease document -----------------------------------------------------------------


lease_records = st.builds(
    LeaseRecord,
    holder=st.sampled_from(("a", "b")),
    session=st.integers(min_value=0, max_value=10**6),
    renew_count=st.integers(min_value=0, max_value=10**9),
    renewed_at_wall_s=st.floats(min_value=0, max_value=4e9),
    lease_duration_s=st.floats(min_value=0.5, max_value=60),
    components_up=st.lists(st.sampled_from(UP), unique=True).map(tuple),
    drained=st.lists(
        st.tuples(st.sampled_from(UP), st.integers(0, 63), st.integers(0, 10**6)), max_size=5
    ).map(tuple),
    store_ok=st.booleans(),
    epochs=st.dictionaries(st.sampled_from(UP), st.integers(0, 10**6)).map(
        lambda d: tuple(sorted(d.items()))
    ),
    released=st.dictionaries(st.sampled_from(UP), st.integers(0, 10**6)).map(
        lambda d: tuple(sorted(d.items()))
    ),
)


@given(lease_records)
@settings(max_examples=60)
def test_lease_doc_round_trip(record: LeaseRecord) -> None:
    doc = record.to_doc()
    assert LeaseRecord.from_doc(doc) == record
    assert LeaseRecord.from_doc(json.loads(json.dumps(doc))) == record


def test_lease_doc_shape() -> None:
    record = LeaseRecord("a", 2, 7, 1700.5, 1.6, ("eep",), (("eep", 1, 3),), epochs=(("eep", 9),))
    assert record.to_doc() == {
        "holder": "a",
        "session": 2,
        "renew_count": 7,
        "renewed_at": 1700.5,
        "lease_duration_s": 1.6,
        "components_up": ["eep"],
        "drained": [["eep", 1, 3]],
        "store_ok": True,
        "epochs": {"eep": 9},
        "released": {},
    }
    assert record.max_epochs == {"eep": 9}


def test_lease_doc_round_trip_keeps_store_ok() -> None:
    # Used to be dropped by to_doc, so store_ok=False came back True.
    record = LeaseRecord("a", 1, 1, 0.0, 1.6, store_ok=False)
    assert record.to_doc()["store_ok"] is False
    assert LeaseRecord.from_doc(record.to_doc()) == record


def test_lease_doc_without_optional_fields_uses_defaults() -> None:
    doc = {"holder": "a", "session": 2, "renew_count": 7, "renewed_at": 5, "lease_duration_s": 2}
    record = LeaseRecord.from_doc(doc)
    assert record == LeaseRecord("a", 2, 7, 5.0, 2.0, (), (), True)
    assert isinstance(record.renewed_at_wall_s, float)
    assert isinstance(record.lease_duration_s, float)


def _lease_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = LeaseRecord("a", 2, 7, 1700.5, 1.6, ("eep",), (("eep", 1, 3),)).to_doc()
    for key, value in changes.items():
        if value is _DELETE:
            del doc[key]
        else:
            doc[key] = value
    return doc


_DELETE = object()
_COUNT = "must be a non-negative integer, got"
_SECONDS = "must be a number of seconds, got"
_ITEMS = "field 'drained' holds [component, index, drain_id] items, got"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_lease_doc(holder=_DELETE), "lease document lacks field 'holder'"),
        (_lease_doc(session=_DELETE), "lease document lacks field 'session'"),
        (_lease_doc(renew_count=_DELETE), "lease document lacks field 'renew_count'"),
        (_lease_doc(renewed_at=_DELETE), "lease document lacks field 'renewed_at'"),
        (_lease_doc(lease_duration_s=_DELETE), "lease document lacks field 'lease_duration_s'"),
        (_lease_doc(holder=""), "field 'holder' must be a site name, got ''"),
        (_lease_doc(holder=None), "field 'holder' must be a site name, got None"),
        (_lease_doc(holder=7), "field 'holder' must be a site name, got 7"),
        (_lease_doc(session="two"), f"field 'session' {_COUNT} 'two'"),
        (_lease_doc(session=None), f"field 'session' {_COUNT} None"),
        (_lease_doc(session=1.5), f"field 'session' {_COUNT} 1.5"),
        (_lease_doc(session=2.0), f"field 'session' {_COUNT} 2.0"),
        (_lease_doc(session=True), f"field 'session' {_COUNT} True"),
        (_lease_doc(session=-1), f"field 'session' {_COUNT} -1"),
        (_lease_doc(renew_count=[7]), f"field 'renew_count' {_COUNT} [7]"),
        (_lease_doc(renew_count="7"), f"field 'renew_count' {_COUNT} '7'"),
        (_lease_doc(renew_count=False), f"field 'renew_count' {_COUNT} False"),
        (_lease_doc(renew_count=-3), f"field 'renew_count' {_COUNT} -3"),
        (_lease_doc(renewed_at="yesterday"), f"field 'renewed_at' {_SECONDS} 'yesterday'"),
        (_lease_doc(renewed_at=True), f"field 'renewed_at' {_SECONDS} True"),
        (_lease_doc(renewed_at=float("nan")), f"field 'renewed_at' {_SECONDS} nan"),
        (_lease_doc(renewed_at=float("inf")), f"field 'renewed_at' {_SECONDS} inf"),
        (_lease_doc(lease_duration_s={}), f"field 'lease_duration_s' {_SECONDS} {{}}"),
        (_lease_doc(lease_duration_s=None), f"field 'lease_duration_s' {_SECONDS} None"),
        (_lease_doc(components_up=5), "field 'components_up' must be a list of names, got 5"),
        (_lease_doc(components_up="eep"), "field 'components_up' must be a list of names"),
        (_lease_doc(components_up=("eep",)), "field 'components_up' must be a list of names"),
        (_lease_doc(components_up=["eep", 3]), "field 'components_up' must be a list of names"),
        (_lease_doc(components_up=None), "field 'components_up' must be a list of names"),
        (_lease_doc(store_ok="true"), "field 'store_ok' must be true or false, got 'true'"),
        (_lease_doc(store_ok=1), "field 'store_ok' must be true or false, got 1"),
        (_lease_doc(store_ok=None), "field 'store_ok' must be true or false, got None"),
        (_lease_doc(drained=5), "field 'drained' must be a list, got 5"),
        (_lease_doc(drained=None), "field 'drained' must be a list, got None"),
        (_lease_doc(drained=(("eep", 1, 3),)), "field 'drained' must be a list"),
        (_lease_doc(drained=[["eep", 1]]), f"{_ITEMS} ['eep', 1]"),
        (_lease_doc(drained=[["eep", 1, 3, 4]]), f"{_ITEMS} ['eep', 1, 3, 4]"),
        (_lease_doc(drained=[("eep", 1, 3)]), f"{_ITEMS} ('eep', 1, 3)"),
        (_lease_doc(drained=[[1, 1, 3]]), f"{_ITEMS} [1, 1, 3]"),
        (_lease_doc(drained=[5]), f"{_ITEMS} 5"),
        (_lease_doc(drained=[["eep", "x", 3]]), f"field 'drained index' {_COUNT} 'x'"),
        (_lease_doc(drained=[["eep", -1, 3]]), f"field 'drained index' {_COUNT} -1"),
        (_lease_doc(drained=[["eep", True, 3]]), f"field 'drained index' {_COUNT} True"),
        (_lease_doc(drained=[["eep", 1, 3.0]]), f"field 'drain_id' {_COUNT} 3.0"),
        (_lease_doc(drained=[["eep", 1, -3]]), f"field 'drain_id' {_COUNT} -3"),
        (_lease_doc(drained=[["eep", 1, False]]), f"field 'drain_id' {_COUNT} False"),
        ({}, "lease document lacks field 'holder'"),
        ([], "a lease document must be an object, got list"),
        (None, "a lease document must be an object, got NoneType"),
        ("a", "a lease document must be an object, got str"),
    ],
)
def test_malformed_lease_doc_is_a_value_error_naming_the_field(doc: Any, message: str) -> None:
    # Wrong types, negative counts and bools used to be coerced by int()/str()/tuple().
    with pytest.raises(ValueError) as err:
        LeaseRecord.from_doc(doc)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("epochs", [["eep", 1], {"eep": -1}, {"eep": "2"}, {"eep": True}])
def test_malformed_epochs_in_a_lease_doc_are_a_value_error(epochs: object) -> None:
    doc = LeaseRecord("a", 1, 1, 0.0, 1.6).to_doc()
    doc["epochs"] = epochs
    with pytest.raises(ValueError, match="epochs"):
        LeaseRecord.from_doc(doc)


def test_reporting_a_component_down_gives_its_grants_up_for_good() -> None:
    # Found by the simulator: a component down at b let the controller move its shards;
    # b, cut off from the store before it read the move, served its old grants again
    # when the component came back. Reported down means given up.
    agent = SiteAgent("b", timing=LeaseTiming(), peers=("a", "b"))
    first = agent.lease_record(wall_s=0.0, components_up=("eap",), epochs={"eap": 11})
    agent.renewed(first, started_at_s=0.0)
    grant = Assignment("b", 11, agent.session)
    assert agent.may_serve(grant, component="eap", index=0, now_s=0.1, component_up=True)
    down = agent.lease_record(wall_s=0.2, components_up=(), epochs={"eap": 11})
    assert down.released == (("eap", 11),)
    agent.renewed(down, started_at_s=0.2)
    assert not agent.may_serve(grant, component="eap", index=0, now_s=0.3, component_up=True)
    regrant = Assignment("b", 12, agent.session)
    assert agent.may_serve(regrant, component="eap", index=0, now_s=0.3, component_up=True)


def test_the_serving_deadline_is_the_renew_deadline_then_the_failsafe_window() -> None:
    timing = LeaseTiming()
    agent = SiteAgent("a", timing=timing, peers=("a", "b"))
    assert agent.serving_deadline_s(0.0) is None  # never renewed
    agent.renewed(agent.lease_record(wall_s=0.0, components_up=()), started_at_s=10.0)
    assert agent.serving_deadline_s(10.5) == 10.0 + timing.renew_deadline_s
    agent.store_failed()
    agent.heard_peer("b", store_ok=False, now_s=10.9)
    assert agent.serving_deadline_s(11.2) == 10.9 + timing.failsafe_confirm_s
    assert agent.serving_deadline_s(11.7) is None  # the failsafe lapsed: fenced
