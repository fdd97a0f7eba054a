"""The runtime's agents and controllers together on one store, driven by a fake clock.

The harness is ``support.runtime_cluster.Cluster`` (its docstring: the schedule, and the
invariants checked after every step); these tests run it on the memory and sqlite stores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from support.runtime_cluster import (
    COMPONENTS,
    DETECTOR,
    EPSILON_S,
    SHARDS,
    STEP_S,
    TICK_INTERVAL_S,
    TIMING,
    TOPOLOGY,
    WORKERS,
    Cluster,
    kinds,
    started,
)

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.core.controller import DecisionKind, PlacementPolicy
from failover.core.fencing import Ownership
from failover.core.quorum import MIN_FENCE_MARGIN_S
from failover.ports import CoordinationStore, Versioned
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import LEADER_KEY, lease_key, ownership_key


@pytest.fixture(params=["memory", "sqlite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CoordinationStore]:
    store: CoordinationStore = (
        MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "bfm.db")
    )
    yield store
    store.close()


@pytest.fixture
def memory() -> MemoryStore:
    return MemoryStore()


# -- 1. start-up ----------------------------------------------------------------------------


def test_start_up_one_leader_and_an_even_split_served_by_exactly_the_owners(
    any_store: CoordinationStore,
) -> None:
    cluster = Cluster(any_store)
    cluster.run(3.0)

    assert cluster.leaders() == ["a"]
    assert kinds(cluster.commits) == [(DecisionKind.INITIAL, c) for c in COMPONENTS]
    assert {m.by for m in cluster.commits} == {"a"}
    for c in COMPONENTS:
        doc = cluster.ownership(c)
        assert doc.counts(WORKERS) == {"a": 2, "b": 2}
        assert [a.epoch for a in doc.shards] == [1] * SHARDS
        assert not any(a.draining for a in doc.shards)
        for i, a in enumerate(doc.shards):
            other = "b" if a.owner == "a" else "a"
            assert cluster.agents[str(a.owner)].serving(c, i) == 1
            assert cluster.agents[other].serving(c, i) is None
            assert cluster.serving_now[(c, i)] == {f"{a.owner}/1": 1}
    assert cluster.violations == []


# -- 2. a site stops --------------------------------------------------------------------------


def test_stopped_site_fences_before_its_shards_go_to_the_survivor_under_new_epochs(
    any_store: CoordinationStore,
) -> None:
    cluster = started(any_store)
    before = {c: cluster.ownership(c) for c in COMPONENTS}
    stopped_s = cluster.now()

    cluster.stop("a")
    cluster.run_until(lambda: cluster.settled(sites=("b",)), limit_s=6.0, what="b owns all")
    cluster.run(3.0)

    failovers = cluster.commits_since(stopped_s)
    assert kinds(failovers) == [(DecisionKind.FAILOVER, c) for c in COMPONENTS]
    assert {m.by for m in failovers} == {"b"}  # a's controller, the leader, stopped too
    granted_s = failovers[0].at_s
    assert {m.at_s for m in failovers} == {granted_s}  # one round of the new leader
    trace_ids = {m.decision.ownership.trace_id for m in failovers}
    assert len(trace_ids) == 1 and next(iter(trace_ids)).startswith("b-")
    assert [label for _, label in cluster.fences] == ["a/1"]
    fenced_s = cluster.fences[0][0]
    assert cluster.last_served["a/1"] < fenced_s
    assert granted_s - fenced_s >= MIN_FENCE_MARGIN_S
    b_session = cluster.agents["b"].agent.session
    for c in COMPONENTS:
        old, new = before[c], cluster.ownership(c)
        assert new.max_epoch == old.max_epoch + 1
        for i, (was, now) in enumerate(zip(old.shards, new.shards, strict=True)):
            if was.owner == "a":
                assert (now.owner, now.session, now.epoch) == ("b", b_session, old.max_epoch + 1)
            else:
                assert now == was
            assert cluster.serving_now[(c, i)] == {"b/1": now.epoch}
    assert cluster.violations == []


# -- 3. one component down ------------------------------------------------------------------


def test_component_down_moves_only_its_shards_at_that_site_within_a_second(
    memory: MemoryStore,
) -> None:
    cluster = started(memory)
    before = {c: memory.get(ownership_key(c)) for c in COMPONENTS}
    eap = cluster.ownership("eap")
    moved = tuple(eap.owned_by("a"))
    down_s = cluster.now()

    cluster.down.add(("a", "eap"))
    moved_s = cluster.run_until(
        lambda: cluster.served_by_owner("eap", sites=("b",)), limit_s=2.0, what="eap at b"
    )
    assert moved_s - down_s < 1.0

    def others_served() -> None:
        for c in COMPONENTS:
            if c != "eap":
                assert cluster.served_by_owner(c), c

    cluster.run(2.0, each=others_served)

    after = cluster.commits_since(down_s)
    assert [(m.decision.kind, m.decision.component, m.decision.shards) for m in after] == [
        (DecisionKind.FAILOVER, "eap", moved)
    ]
    for c in COMPONENTS:
        if c != "eap":
            assert memory.get(ownership_key(c)) == before[c]
    now_eap = cluster.ownership("eap")
    for i, (was, now) in enumerate(zip(eap.shards, now_eap.shards, strict=True)):
        if i in moved:
            assert (now.owner, now.epoch) == ("b", eap.max_epoch + 1)
        else:
            assert now == was
    assert cluster.violations == []


def test_one_unanswered_probe_moves_nothing_a_hang_moves_the_component(
    memory: MemoryStore,
) -> None:
    """Unanswered is not exited: a busy moment is ridden out, a lasting hang is not."""
    cluster = started(memory)
    blip_s = cluster.now()
    cluster.hung.add(("a", "eap"))
    cluster.run(DETECTOR.probe_interval_s)
    cluster.hung.clear()
    cluster.run(2.0)
    assert cluster.commits_since(blip_s) == []

    hang_s = cluster.now()
    cluster.hung.add(("a", "eap"))
    moved_s = cluster.run_until(
        lambda: cluster.served_by_owner("eap", sites=("b",)), limit_s=3.0, what="eap at b"
    )
    assert moved_s - hang_s < 2.0
    assert cluster.violations == []


# -- 4. return and hand-back --------------------------------------------------------------


def returned(store: CoordinationStore) -> tuple[Cluster, float, float]:
    """Site a stopped, all shards at b, then a restarted; (cluster, restart time, all-up time)."""
    cluster = started(store)
    cluster.stop("a")
    cluster.run_until(lambda: cluster.settled(sites=("b",)), limit_s=6.0, what="b owns all")
    cluster.run(2.0)
    back_s = cluster.now()
    agent = cluster.start_agent("a")
    cluster.start_controller("a")
    up_s = cluster.run_until(
        lambda: set(agent.reported[0]) == set(COMPONENTS), limit_s=2.0, what="a reports up"
    )
    return cluster, back_s, up_s


def test_returned_site_gets_half_back_after_holdoff_through_drain_ack_transfer(
    any_store: CoordinationStore,
) -> None:
    cluster, back_s, up_s = returned(any_store)
    limit_s = 3 * DETECTOR.handback_holdoff_s + 5
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=limit_s, what="even")
    cluster.run(2.0)

    after = cluster.commits_since(back_s)
    drains = [m for m in after if m.decision.kind is DecisionKind.DRAIN]
    # One failure, one base hold-off (start-up is no failure), counted from the first tick
    # that saw a's components up.
    waited_s = drains[0].at_s - up_s
    assert DETECTOR.handback_holdoff_s <= waited_s <= DETECTOR.handback_holdoff_s + 2 * STEP_S
    new_session = cluster.agents["a"].agent.session
    assert new_session == 2  # continues the stored lease's numbering
    for c in COMPONENTS:
        mine = [m for m in after if m.decision.component == c]
        assert [m.decision.kind for m in mine] == [DecisionKind.DRAIN, DecisionKind.TRANSFER]
        drain, transfer = mine
        assert len(drain.decision.shards) == 2
        assert transfer.decision.shards == drain.decision.shards
        b_lease = transfer.leases["b"]
        assert b_lease is not None
        for i in transfer.decision.shards:
            was, now = transfer.previous.shards[i], transfer.decision.ownership.shards[i]
            assert was.owner == "b" and was.draining
            assert (c, i, was.drain_id) in b_lease.drained  # b acknowledged before the move
            assert (now.owner, now.session, now.draining) == ("a", new_session, False)
            assert now.epoch == transfer.previous.max_epoch + 1
            assert cluster.serving_now[(c, i)] == {"a/2": now.epoch}
    assert cluster.even()
    assert cluster.violations == []


# -- 5. leader failover -----------------------------------------------------------------------


def test_leader_failover_after_the_lease_duration_and_decisions_go_on(
    memory: MemoryStore,
) -> None:
    cluster = started(memory)
    assert cluster.leaders() == ["a"]
    old = cluster.controllers["a"]
    renewed_s = old.renewed_at_s
    assert renewed_s is not None

    cluster.running_controllers.discard("a")
    took_s = cluster.run_until(
        lambda: any(s != "a" for s in cluster.leaders()), limit_s=4.0, what="a new leader"
    )
    assert cluster.leaders() == ["b"]
    assert not old.leading(cluster.now())
    waited_s = took_s - renewed_s
    assert TIMING.lease_duration_s - EPSILON_S <= waited_s
    assert waited_s <= TIMING.lease_duration_s + TICK_INTERVAL_S + EPSILON_S

    down_s = cluster.now()
    cluster.down.add(("b", "msm"))
    cluster.run_until(
        lambda: cluster.served_by_owner("msm", sites=("a",)), limit_s=1.0, what="msm at a"
    )
    after = cluster.commits_since(down_s)
    assert [(m.by, m.decision.kind, m.decision.component) for m in after] == [
        ("b", DecisionKind.FAILOVER, "msm")
    ]
    assert cluster.violations == []


# -- 6. and 7. store outage -------------------------------------------------------------------


def test_store_outage_with_heartbeats_freezes_ownership_and_nobody_fences(
    memory: MemoryStore,
) -> None:
    cluster = started(memory)
    before = {c: memory.get(ownership_key(c)) for c in COMPONENTS}
    sessions = {w: cluster.agents[w].agent.session for w in WORKERS}
    expected = {
        (c, i): {f"{a.owner}/1": a.epoch}
        for c in COMPONENTS
        for i, a in enumerate(cluster.ownership(c).shards)
    }
    commits = len(cluster.commits)

    def all_served() -> None:
        assert cluster.serving_now == expected

    memory.set_fault("unavailable")
    cluster.run(20.0, each=all_served)
    assert cluster.leaders() == []  # no controller can renew: none decides
    assert not any(cluster.agents[w].agent.store_ok for w in WORKERS)
    memory.set_fault(None)
    cluster.run(10.0, each=all_served)

    assert cluster.commits[commits:] == []
    assert {c: memory.get(ownership_key(c)) for c in COMPONENTS} == before
    assert cluster.fences == []
    assert {w: cluster.agents[w].agent.session for w in WORKERS} == sessions
    assert all(cluster.agents[w].agent.store_ok for w in WORKERS)
    assert cluster.leaders() == ["a"]  # the old leader resumes: its document never changed
    assert cluster.violations == []


def test_store_outage_without_heartbeats_fences_both_after_the_renew_deadline(
    memory: MemoryStore,
) -> None:
    cluster = started(memory)
    before = {c: cluster.ownership(c) for c in COMPONENTS}
    cluster.link_up = False
    memory.set_fault("unavailable")
    deadlines = {}
    for w in WORKERS:
        last_renew_start_s = cluster.agents[w].agent.last_renew_start_s
        assert last_renew_start_s is not None
        deadlines[f"{w}/1"] = last_renew_start_s + TIMING.renew_deadline_s

    def served_only_before_deadline() -> None:
        for servers in cluster.serving_now.values():
            for label in servers:
                assert cluster.now() <= deadlines[label] + EPSILON_S

    cluster.run(2.0, each=served_only_before_deadline)
    assert sorted(label for _, label in cluster.fences) == ["a/1", "b/1"]
    for fenced_s, label in cluster.fences:
        assert deadlines[label] - EPSILON_S < fenced_s <= deadlines[label] + STEP_S + EPSILON_S
    assert all(servers == {} for servers in cluster.serving_now.values())

    # The store returns: new sessions, and every shard re-granted under a new epoch.
    healed_s = cluster.now()
    memory.set_fault(None)
    cluster.link_up = True
    cluster.run_until(lambda: cluster.settled() and cluster.even(), limit_s=3.0, what="regrant")
    assert {w: cluster.agents[w].agent.session for w in WORKERS} == {"a": 2, "b": 2}
    assert kinds(cluster.commits_since(healed_s)) == [
        (DecisionKind.FAILOVER, c) for c in COMPONENTS
    ]
    for c in COMPONENTS:
        assert [a.epoch for a in cluster.ownership(c).shards] == [before[c].max_epoch + 1] * SHARDS
    assert cluster.violations == []


def test_store_outage_failsafe_ends_when_the_heartbeats_stop(memory: MemoryStore) -> None:
    cluster = started(memory)
    memory.set_fault("unavailable")
    cluster.run(3.0)
    assert cluster.fences == []
    cluster.link_up = False
    heard_s = cluster.last_heartbeat_s
    assert heard_s is not None
    cluster.run(2.0)

    assert sorted(label for _, label in cluster.fences) == ["a/1", "b/1"]
    confirm_s = TIMING.failsafe_confirm_s
    for fenced_s, _ in cluster.fences:
        assert confirm_s - EPSILON_S < fenced_s - heard_s <= confirm_s + STEP_S + EPSILON_S
    assert all(servers == {} for servers in cluster.serving_now.values())
    assert cluster.violations == []


# -- 8. damaged documents ---------------------------------------------------------------------

BAD_OWNERSHIP = {"component": "gsm", "max_epoch": 1, "shards": "not a list"}
BAD_LEASE = {"holder": "a", "session": "one"}


def damage(store: CoordinationStore, key: str, doc: Mapping[str, object]) -> str:
    got = store.get(key)
    assert got is not None, key
    return store.compare_and_set(key, doc, expected_revision=got.revision)


def test_damaged_ownership_is_never_overwritten_nor_served_and_others_go_on(
    memory: MemoryStore,
) -> None:
    cluster = started(memory)
    key = ownership_key("gsm")
    good = memory.get(key)
    assert good is not None
    revision = damage(memory, key, BAD_OWNERSHIP)
    damaged_s = cluster.now()
    cluster.run(0.5)
    for w in WORKERS:
        assert cluster.agents[w].damaged == {
            "gsm": f"ownership/gsm revision {revision}: 'shards' must be a list"
        }
        assert "gsm" not in cluster.agents[w].docs
    assert all(cluster.serving_now[("gsm", i)] == {} for i in range(SHARDS))
    assert all(cluster.served_by_owner(c) for c in COMPONENTS if c != "gsm")

    cluster.stop("b")  # a failure that would move gsm's shards too, were it readable
    cluster.run_until(
        lambda: all(cluster.served_by_owner(c, sites=("a",)) for c in COMPONENTS if c != "gsm"),
        limit_s=6.0,
        what="a owns everything but gsm",
    )
    cluster.run(2.0)

    assert memory.get(key) == Versioned(key, BAD_OWNERSHIP, revision)
    assert kinds(cluster.commits_since(damaged_s)) == [
        (DecisionKind.FAILOVER, c) for c in COMPONENTS if c != "gsm"
    ]
    leader = cluster.controllers["a"]
    assert cluster.leaders() == ["a"]
    assert set(leader.damaged) == {"gsm"}
    assert f"ownership/gsm revision {revision}: 'shards' must be a list" == leader.damaged["gsm"]
    assert set(cluster.agents["a"].damaged) == {"gsm"}
    assert all(cluster.serving_now[("gsm", i)] == {} for i in range(SHARDS))
    assert cluster.violations == []

    # An operator writes the last good document back: gsm is read, decided and served again.
    memory.compare_and_set(key, dict(good.value), expected_revision=revision)
    cluster.run_until(
        lambda: cluster.served_by_owner("gsm", sites=("a",)), limit_s=2.0, what="gsm repaired"
    )
    assert leader.damaged == {}
    assert cluster.agents["a"].damaged == {}
    assert cluster.violations == []


def test_damaged_lease_counts_its_site_as_gone(memory: MemoryStore) -> None:
    cluster = started(memory)
    cluster.running_agents.discard("a")  # a's agent stops renewing; controllers go on
    cluster.run(TIMING.renew_deadline_s + 2 * STEP_S)  # a has fenced itself
    assert [label for _, label in cluster.fences] == ["a/1"]
    damaged_s = cluster.now()
    damage(memory, lease_key("a"), BAD_LEASE)

    cluster.run_until(
        lambda: cluster.settled(sites=("b",)),
        limit_s=TIMING.lease_duration_s + 0.5,
        what="b owns all",
    )
    leader = cluster.controllers["a"]
    views = leader.views()
    assert not views["a"].alive  # judged by its last good lease, which expired
    assert views["b"].alive
    assert kinds(cluster.commits_since(damaged_s)) == [
        (DecisionKind.FAILOVER, c) for c in COMPONENTS
    ]
    stored = memory.get(lease_key("a"))
    assert stored is not None and stored.value == BAD_LEASE  # read, never rewritten
    assert cluster.violations == []


def test_damaged_lease_of_a_cut_off_site_waits_for_it_to_fence(memory: MemoryStore) -> None:
    cluster = started(memory)
    cluster.running_agents.discard("a")  # cut off: a still serves until its renew deadline
    damaged_s = cluster.now()
    damage(memory, lease_key("a"), BAD_LEASE)
    cluster.run(TIMING.lease_duration_s + 1.0)

    failovers = cluster.commits_since(damaged_s)
    assert kinds(failovers) == [(DecisionKind.FAILOVER, c) for c in COMPONENTS]
    assert [label for _, label in cluster.fences] == ["a/1"]
    assert failovers[0].at_s - cluster.fences[0][0] >= MIN_FENCE_MARGIN_S
    assert cluster.violations == []


def test_damaged_leader_document_does_not_stop_the_controllers(memory: MemoryStore) -> None:
    cluster = started(memory)
    damage(memory, LEADER_KEY, {"holder": "a", "term": "seven"})
    cluster.run_until(
        lambda: len(cluster.leaders()) == 1,
        limit_s=TIMING.lease_duration_s + 1.0,
        what="a leader again",
    )
    cluster.down.add(("a", "eap"))
    cluster.run_until(
        lambda: cluster.served_by_owner("eap", sites=("b",)), limit_s=1.0, what="eap at b"
    )
    assert cluster.violations == []


def test_restarted_agent_never_serves_its_predecessors_grants(memory: MemoryStore) -> None:
    cluster = started(memory)
    old_session = cluster.agents["a"].agent.session
    cluster.align_to_renewal()
    cluster.crash_agent("a")
    damage(memory, lease_key("a"), BAD_LEASE)
    new = cluster.start_agent("a")  # renews in the next step, before any controller tick
    cluster.run(2.0)

    assert new.agent.session > old_session
    assert cluster.violations == []


def test_restarted_agent_with_its_lease_intact_takes_a_new_session(memory: MemoryStore) -> None:
    cluster = started(memory)
    old_session = cluster.agents["a"].agent.session
    cluster.align_to_renewal()
    cluster.crash_agent("a")
    new = cluster.start_agent("a")
    cluster.run(2.0)

    assert new.agent.session == old_session + 1
    assert cluster.violations == []


def test_deleted_ownership_document_never_reuses_an_epoch(memory: MemoryStore) -> None:
    cluster = started(memory)
    cluster.down.add(("a", "eap"))  # eap's shards at a move to b under epoch 2
    cluster.run_until(
        lambda: cluster.served_by_owner("eap", sites=("b",)), limit_s=2.0, what="eap at b"
    )
    key = ownership_key("eap")
    got = memory.get(key)
    assert got is not None and Ownership.from_doc(got.value).max_epoch == 2
    memory.delete(key, expected_revision=got.revision)
    cluster.run(2.0)

    assert cluster.violations == []


def test_a_replica_that_waits_before_acquiring_leaves_the_lease_to_the_preferred_one(
    memory: MemoryStore,
) -> None:
    clock = FakeClock()

    def replica(site: str, acquire_after_s: float) -> ControllerRuntime:
        return ControllerRuntime(
            site,
            store=memory,
            clock=clock,
            topology=TOPOLOGY,
            timing=TIMING,
            detector=DETECTOR,
            policy=PlacementPolicy(),
            acquire_after_s=acquire_after_s,
        )

    worker = replica("a", TIMING.lease_duration_s)
    worker.tick()
    clock.advance(0.3)
    witness = replica("w", 0.0)  # started later, still the one that leads
    for _ in range(5):
        worker.tick()
        witness.tick()
        clock.advance(0.1)
    assert witness.leading(clock.monotonic()) and not worker.leading(clock.monotonic())
    # Without the preferred replica the other takes the lease once its wait is over.
    alone = replica("b", TIMING.lease_duration_s)
    held = memory.get(LEADER_KEY)
    assert held is not None
    memory.delete(LEADER_KEY, expected_revision=held.revision)
    alone.tick()
    assert memory.get(LEADER_KEY) is None
    clock.advance(TIMING.lease_duration_s)
    alone.tick()
    assert alone.leading(clock.monotonic())
