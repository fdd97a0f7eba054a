"""The operator's choices (admin/policy) and the decision history (events/), in the runtime.

The controller tests reuse the in-process cluster of ``test_runtime.py`` (two agents and
three controllers on one store, a fake clock, invariants checked after every step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from small_system import SmallSystem
from support.runtime_cluster import COMPONENTS, SHARDS, WORKERS, Cluster, Commit, started

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.core.controller import DecisionKind, PlacementPolicy
from failover.core.topology import default_topology
from failover.ports import Conflict, CoordinationStore, OutcomeUnknown, StoreUnavailable, Versioned
from failover.runtime import admin
from failover.runtime.admin import Refused, effective_policy
from failover.runtime.documents import (
    ADMIN_POLICY_KEY,
    AdminPolicy,
    Event,
    event_key,
    ownership_key,
)
from failover.runtime.events import EventLog, read_events

TOPOLOGY = default_topology(shards_per_component=SHARDS)


# -- helpers ----------------------------------------------------------------------------------


class FlakyStore:
    """A store whose next writes of one key fail as told (``Conflict`` or ``OutcomeUnknown``).

    ``before_write`` runs just before a planned failure, so a test can let "another
    operator" write in between, as a lost compare-and-set would really see it.
    """

    def __init__(self, inner: CoordinationStore, key: str) -> None:
        self.inner, self.key = inner, key
        self.failures: list[type[Exception]] = []
        self.before_write: Any = None
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _write(self, key: str, write: Any) -> str:
        if key == self.key:
            self.writes += 1
            if self.failures:
                failure = self.failures.pop(0)
                if self.before_write is not None:
                    self.before_write()
                if failure is OutcomeUnknown:
                    write()  # it landed, but the answer was lost
                raise failure(key)
        result: str = write()
        return result

    def create(self, key: str, value: Mapping[str, Any]) -> str:
        return self._write(key, lambda: self.inner.create(key, value))

    def compare_and_set(self, key: str, value: Mapping[str, Any], *, expected_revision: str) -> str:
        return self._write(
            key,
            lambda: self.inner.compare_and_set(key, value, expected_revision=expected_revision),
        )


def owner_epochs(commits: list[Commit]) -> dict[tuple[str, int, int], set[str]]:
    """(component, shard, epoch) -> every owner any committed decision gave it."""
    seen: dict[tuple[str, int, int], set[str]] = {}
    for m in commits:
        for i, a in enumerate(m.decision.ownership.shards):
            if a.owner is not None:
                seen.setdefault((m.decision.component, i, a.epoch), set()).add(a.owner)
    return seen


def assert_epochs_grow(commits: list[Commit]) -> None:
    for m in commits:
        for i in m.decision.shards:
            was, now = m.previous.shards[i], m.decision.ownership.shards[i]
            if now.owner != was.owner:
                assert now.epoch > was.epoch, (m.decision.component, i, was, now)
                assert now.epoch > m.previous.max_epoch


def counts(cluster: Cluster, component: str) -> dict[str, int]:
    return cluster.ownership(component).counts(WORKERS)


# -- validation -------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Cluster:
    return started(MemoryStore())


def test_unknown_sites_and_components_name_the_known_ones(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    with pytest.raises(ValueError, match=r"unknown site 'c'; known sites: a, b, w"):
        admin.drain(store, "c", topology=TOPOLOGY, clock=clock)
    with pytest.raises(ValueError, match=r"'w' is a witness .* worker sites: a, b"):
        admin.drain(store, "w", topology=TOPOLOGY, clock=clock)
    with pytest.raises(ValueError, match=r"'w' is a witness"):
        admin.switchover(store, "eap", "w", topology=TOPOLOGY, clock=clock)
    with pytest.raises(ValueError, match=r"unknown component 'nope'; known components: backbone"):
        admin.switchover(store, "nope", "b", topology=TOPOLOGY, clock=clock)
    with pytest.raises(ValueError, match="unknown site 'x'"):
        admin.undrain(store, "x", topology=TOPOLOGY, clock=clock)
    assert store.get(ADMIN_POLICY_KEY) is None  # nothing was written


def test_the_last_serving_site_cannot_be_drained(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    admin.drain(store, "b", topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match=r"cannot drain a: it is the last worker site .*b is drained"):
        admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    admin.undrain(store, "b", topology=TOPOLOGY, clock=clock)
    cluster.stop("b")
    cluster.run(3.0)  # b's lease is older than its duration now
    with pytest.raises(Refused, match="b is not alive"):
        admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    assert admin.read_policy(store).drained_sites == ()


def test_pins_and_drains_must_not_contradict(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    admin.switchover(store, "eap", "a", topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match="cannot drain a: eap pinned to it; switch it to b first"):
        admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    admin.rebalance(store, topology=TOPOLOGY, clock=clock)
    admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    with pytest.raises(Refused, match="site a is drained; undrain it first"):
        admin.switchover(store, "eep", "a", topology=TOPOLOGY, clock=clock)
    cluster.down.add(("b", "gsm"))
    cluster.run(1.0)
    with pytest.raises(Refused, match="gsm is not up at b"):
        admin.switchover(store, "gsm", "b", topology=TOPOLOGY, clock=clock)


def test_changes_are_recorded_with_who_when_why_and_repeats_change_nothing(
    cluster: Cluster,
) -> None:
    store, clock = cluster.store, cluster.clock
    change = admin.drain(
        store, "a", topology=TOPOLOGY, clock=clock, changed_by="ops@x", reason="update"
    )
    assert change.changed and change.summary == "site a drained"
    policy = admin.read_policy(store)
    assert policy.drained_sites == ("a",)
    assert (policy.changed_by, policy.reason) == ("ops@x", "update")
    assert policy.changed_at_wall_s == clock.wall()
    revision = store.get(ADMIN_POLICY_KEY)
    again = admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    assert not again.changed and again.summary == "site a is already drained"
    assert store.get(ADMIN_POLICY_KEY) == revision
    assert not admin.rebalance(store, topology=TOPOLOGY, clock=clock).changed
    last = read_events(store).events[-1][1]
    assert last.kind == "admin" and last.leader == "ops@x"
    assert last.reason == "drain a by ops@x: site a drained (update)"


# -- compare-and-set ------------------------------------------------------------------------


def test_cas_retry_keeps_a_concurrent_change(cluster: Cluster) -> None:
    flaky = FlakyStore(cluster.store, ADMIN_POLICY_KEY)
    flaky.failures = [Conflict]
    flaky.before_write = lambda: admin.switchover(
        cluster.store, "msm", "b", topology=TOPOLOGY, clock=cluster.clock
    )
    change = admin.drain(flaky, "a", topology=TOPOLOGY, clock=cluster.clock)
    assert change.changed and change.before.pinned == {"msm": "b"}
    policy = admin.read_policy(cluster.store)
    assert policy.drained_sites == ("a",) and policy.pinned == {"msm": "b"}
    assert flaky.writes == 2


def test_cas_gives_up_after_the_bounded_attempts(cluster: Cluster) -> None:
    flaky = FlakyStore(cluster.store, ADMIN_POLICY_KEY)
    flaky.failures = [Conflict] * 3
    with pytest.raises(Conflict, match="changed under us 3 times"):
        admin.drain(flaky, "a", topology=TOPOLOGY, clock=cluster.clock, attempts=3)
    assert admin.read_policy(cluster.store) == AdminPolicy()


def test_an_unknown_outcome_that_landed_counts_as_done(cluster: Cluster) -> None:
    flaky = FlakyStore(cluster.store, ADMIN_POLICY_KEY)
    flaky.failures = [OutcomeUnknown]
    change = admin.drain(flaky, "b", topology=TOPOLOGY, clock=cluster.clock)
    assert change.changed and flaky.writes == 1
    assert admin.read_policy(cluster.store).drained_sites == ("b",)


def test_a_damaged_policy_is_replaced_by_the_next_change_and_says_so(cluster: Cluster) -> None:
    store = cluster.store
    store.create(ADMIN_POLICY_KEY, {"drained_sites": "a"})
    with pytest.raises(ValueError, match="drained_sites"):
        admin.read_policy(store)
    change = admin.undrain(store, "b", topology=TOPOLOGY, clock=cluster.clock)
    assert change.changed and "was damaged" in change.replaced_damaged
    assert admin.read_policy(store) == change.after


def test_effective_policy_merges_pins_and_ignores_what_names_no_worker() -> None:
    policy = AdminPolicy(drained_sites=("a", "w", "z"), pinned={"eap": "b", "x": "a", "gsm": "w"})
    drained, placement, ignored = effective_policy(
        policy, TOPOLOGY, PlacementPolicy(handback_batch_size=2, pinned={"msm": "a", "eap": "a"})
    )
    assert drained == {"a"}
    assert placement.pinned == {"msm": "a", "eap": "b"}
    assert placement.handback_batch_size == 2
    assert len(ignored) == 4


# -- the history ------------------------------------------------------------------------------


def _event(at_s: float, reason: str = "") -> Event:
    return Event(at_wall_s=at_s, kind="failover", reason=reason, component="eap")


def test_event_log_keeps_only_the_newest_and_reads_since() -> None:
    store = MemoryStore()
    log = EventLog(store, keep=5)
    sequences = [log.append(_event(100.0 + n, f"n{n}")) for n in range(8)]
    assert sequences == list(range(1, 9))
    assert [v.key for v in store.list("events/")] == [event_key(n) for n in range(4, 9)]
    assert event_key(4) == "events/000000000004"
    history = read_events(store)
    assert [s for s, _ in history.events] == [4, 5, 6, 7, 8]
    assert [e.reason for _, e in read_events(store, since_wall_s=106.0).events] == ["n6", "n7"]
    assert [s for s, _ in read_events(store, limit=2).events] == [7, 8]


def test_event_log_takes_the_next_sequence_after_another_writer() -> None:
    store = MemoryStore()
    mine, theirs = EventLog(store), EventLog(store)
    assert mine.append(_event(1.0)) == 1
    assert theirs.append(_event(2.0)) == 2
    assert mine.append(_event(3.0)) == 3  # its create of 2 lost: listed again
    assert [s for s, _ in read_events(store).events] == [1, 2, 3]


def test_damaged_events_are_reported_not_fatal() -> None:
    store = MemoryStore()
    EventLog(store).append(_event(1.0))
    store.create(event_key(2), {"at_wall_s": "soon"})
    history = read_events(store)
    assert [s for s, _ in history.events] == [1]
    assert history.damaged == (
        "events/000000000002: field 'at_wall_s' must be a number, got 'soon'",
    )


def test_the_leader_records_every_committed_decision(cluster: Cluster) -> None:
    events = [e for _, e in read_events(cluster.store).events]
    assert [(e.kind, e.component) for e in events] == [("initial", c) for c in COMPONENTS]
    for e in events:
        assert (e.leader, e.term, e.epoch_before, e.epoch_after) == ("a", 1, 0, 1)
        assert e.shards == tuple(range(SHARDS))
        assert {src for _, src, _ in e.moves} == {None}
        assert e.trace_id.startswith("a-")
    assert cluster.controllers["a"].events_error == ""


class NoEvents:
    """A store on which every write under events/ fails as unreachable."""

    def __init__(self, inner: CoordinationStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, key: str, value: Mapping[str, Any]) -> str:
        if key.startswith("events/"):
            raise StoreUnavailable("events are out")
        return self.inner.create(key, value)


def test_a_failed_history_append_never_holds_up_the_decisions() -> None:
    store = MemoryStore()
    system = SmallSystem(store, FakeClock(), topology=TOPOLOGY, controller_store=NoEvents(store))
    system.run(30)
    controller = system.controller
    for c in COMPONENTS:
        assert store.get(ownership_key(c)) is not None  # every component placed
    assert controller.events_error == "StoreUnavailable: events are out"
    assert store.list("events/") == []


# -- the controller applies the operator's choices ------------------------------------------


def test_drain_moves_everything_to_b_safely_and_undrain_evens_it_out_again(
    cluster: Cluster,
) -> None:
    store, clock = cluster.store, cluster.clock
    drained_s = cluster.now()
    admin.drain(store, "a", topology=TOPOLOGY, clock=clock, reason="update a")
    cluster.run_until(lambda: cluster.settled(sites=("b",)), limit_s=5.0, what="all at b")
    cluster.run(1.0)
    for c in COMPONENTS:
        assert counts(cluster, c) == {"a": 0, "b": SHARDS}, c
    during = cluster.commits_since(drained_s)
    assert {m.decision.kind for m in during} == {DecisionKind.DRAIN, DecisionKind.TRANSFER}
    for m in during:
        if m.decision.kind is DecisionKind.TRANSFER:
            a_lease = m.leases["a"]
            assert a_lease is not None
            for i in m.decision.shards:
                was = m.previous.shards[i]
                assert was.owner == "a" and was.draining
                assert (m.decision.component, i, was.drain_id) in a_lease.drained

    undrained_s, undrained_wall_s = cluster.now(), clock.wall()
    admin.undrain(store, "a", topology=TOPOLOGY, clock=clock)
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=5.0, what="even")
    cluster.run(1.0)
    for c in COMPONENTS:
        assert counts(cluster, c) == {"a": SHARDS // 2, "b": SHARDS // 2}, c
    assert any(m.decision.kind is DecisionKind.TRANSFER for m in cluster.commits_since(undrained_s))

    assert_epochs_grow(cluster.commits)
    assert all(len(owners) == 1 for owners in owner_epochs(cluster.commits).values())
    assert cluster.violations == []  # never two processes serving a shard, no stale epoch
    drains = [e for _, e in read_events(store).events if e.kind == "drain"]
    assert {"(operator: a drained)" in e.reason for e in drains} == {True, False}
    for e in drains:
        assert ("(operator: a drained)" in e.reason) == (e.at_wall_s < undrained_wall_s)


def test_switchover_pins_one_component_and_rebalance_spreads_it_again(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    before = {c: cluster.ownership(c) for c in COMPONENTS if c != "eap"}
    admin.switchover(store, "eap", "b", topology=TOPOLOGY, clock=clock)
    cluster.run_until(
        lambda: cluster.served_by_owner("eap", sites=("b",)), limit_s=5.0, what="eap at b"
    )
    cluster.run(1.0)
    assert counts(cluster, "eap") == {"a": 0, "b": SHARDS}
    for c, doc in before.items():
        assert cluster.ownership(c) == doc  # the others did not move
    admin.rebalance(store, topology=TOPOLOGY, clock=clock)
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=5.0, what="even")
    assert_epochs_grow(cluster.commits)
    assert all(len(owners) == 1 for owners in owner_epochs(cluster.commits).values())
    assert cluster.violations == []


def test_a_damaged_policy_keeps_the_last_good_one_in_force(cluster: Cluster) -> None:
    store, clock = cluster.store, cluster.clock
    admin.drain(store, "a", topology=TOPOLOGY, clock=clock)
    cluster.run_until(lambda: cluster.settled(sites=("b",)), limit_s=5.0, what="all at b")
    got = store.get(ADMIN_POLICY_KEY)
    assert got is not None
    store.compare_and_set(ADMIN_POLICY_KEY, {"pinned": 7}, expected_revision=got.revision)
    cluster.run(3.0)
    leader = cluster.controllers["a"]
    assert leader.admin.drained_sites == ("a",)
    assert leader.admin_damaged.startswith("admin/policy revision ")
    assert "'pinned'" in leader.admin_damaged
    for c in COMPONENTS:
        assert counts(cluster, c) == {"a": 0, "b": SHARDS}  # not handed back
    store.delete(ADMIN_POLICY_KEY, expected_revision=_revision(store))
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=5.0, what="even")
    assert leader.admin_damaged == ""
    assert cluster.violations == []


def _revision(store: CoordinationStore) -> str:
    got: Versioned | None = store.get(ADMIN_POLICY_KEY)
    assert got is not None
    return got.revision
