"""The etcd store's own behaviour against a real 3-member cluster: members killed, paused,
all down. The shared contract (``test_store_contract.py``) runs against etcd as well.

Each test starts its own cluster (about 1 s here) because each breaks it; the fixture stops
every member by PID whatever happens. Ceilings are generous: they only catch hangs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from failover.adapters.etcd_cluster import EtcdCluster, etcd_binary
from failover.adapters.etcd_store import EtcdStore
from failover.adapters.store_url import open_store
from failover.ports import Conflict, OutcomeUnknown, StoreError, StoreUnavailable

T = TypeVar("T")

# A new leader needs 2-4 s with the cluster's election timeout (2000 ms); many times that.
RECOVERY_CEILING_S = 30.0
# Everything down: refused connections answer at once; allow for a loaded host.
UNAVAILABLE_CEILING_S = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian: apt-get install -y etcd-server)")
    with EtcdCluster(tmp_path / "etcd") as started:
        yield started


def _store(cluster: EtcdCluster, order: list[int], **kwargs: float) -> EtcdStore:
    """A store listing the members in ``order`` (the first is tried first)."""
    endpoints = [(cluster.members[i].host, cluster.members[i].client_port) for i in order]
    return EtcdStore(endpoints, **kwargs)


def _follower(cluster: EtcdCluster) -> int:
    deadline_s = time.monotonic() + RECOVERY_CEILING_S
    while (leader := cluster.leader()) is None:
        assert time.monotonic() < deadline_s, "no etcd leader"
        time.sleep(0.1)
    return (leader + 1) % len(cluster.members)


def _eventually(call: Callable[[], T]) -> tuple[T, int]:
    """Retry ``call`` through store errors until it works; returns it and the failures."""
    deadline_s = time.monotonic() + RECOVERY_CEILING_S
    failures = 0
    while True:
        try:
            return call(), failures
        except (StoreUnavailable, OutcomeUnknown):
            failures += 1
            assert time.monotonic() < deadline_s, "the store did not recover"
            time.sleep(0.2)


def test_a_killed_member_is_skipped_for_reads_and_writes(cluster: EtcdCluster) -> None:
    victim = _follower(cluster)
    others = [i for i in range(3) if i != victim]
    store = _store(cluster, [victim, *others])
    revision = store.create("k", {"v": 1})
    cluster.kill(victim)
    started_s = time.monotonic()
    got = store.get("k")  # the first member listed is dead: the next one answers
    assert got is not None
    assert got.revision == revision
    second = store.compare_and_set("k", {"v": 2}, expected_revision=revision)
    assert [(v.key, v.value, v.revision) for v in store.list("")] == [("k", {"v": 2}, second)]
    assert store.create("new", {}) not in {revision, second}
    assert time.monotonic() - started_s < UNAVAILABLE_CEILING_S
    # A fresh store whose first member is dead opens and works too.
    fresh = _store(cluster, [victim, *others])
    assert fresh.get("k") == store.get("k")
    cluster.restart(victim)
    assert _store(cluster, [victim]).get("k") == store.get("k")


def test_the_store_recovers_after_the_leader_is_killed(cluster: EtcdCluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    store = _store(cluster, [leader, *[i for i in range(3) if i != leader]])
    revision = store.create("k", {"v": 1})
    cluster.kill(leader)
    started_s = time.monotonic()
    # Writes may fail (unavailable or unknown) until a new leader is elected; then they work.
    _eventually(lambda: store.create("after", {"v": 2}))
    got, _ = _eventually(lambda: store.get("k"))
    assert got is not None
    assert (got.value, got.revision) == ({"v": 1}, revision)
    assert store.compare_and_set("k", {"v": 3}, expected_revision=revision) != revision
    assert time.monotonic() - started_s < RECOVERY_CEILING_S


def test_all_members_down_is_unavailable_quickly_naming_each(cluster: EtcdCluster) -> None:
    store = open_store(cluster.url)
    revision = store.create("k", {"v": 1})
    for index in range(3):
        cluster.kill(index)
    calls: list[Callable[[], object]] = [
        lambda: store.get("k"),
        lambda: store.list(""),
        lambda: store.create("new", {}),
        lambda: store.compare_and_set("k", {"v": 2}, expected_revision=revision),
        lambda: store.delete("k", expected_revision=revision),
        lambda: store.wait_for_change("", {}, timeout_s=60),
    ]
    for call in calls:
        started_s = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            call()
        assert time.monotonic() - started_s < UNAVAILABLE_CEILING_S
        message = str(raised.value)
        assert all(f"{endpoint}: " in message for endpoint in cluster.endpoints), message
    with pytest.raises(StoreUnavailable, match="could answer"):
        open_store(cluster.url)


def test_a_write_to_paused_members_is_outcome_unknown(cluster: EtcdCluster) -> None:
    timeout_s = 0.5
    store = _store(cluster, [0, 1, 2], request_timeout_s=timeout_s)
    revision = store.create("k", {"v": 1})
    for index in range(3):
        cluster.pause(index)  # sockets stay open, nothing answers: the write goes out
    try:
        started_s = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
            store.compare_and_set("k", {"v": 2}, expected_revision=revision)
        assert time.monotonic() - started_s < UNAVAILABLE_CEILING_S
        # A read is never "unknown": every member timed out, so it is unavailable.
        started_s = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"no answer within 0\.5 s"):
            store.get("k")
        assert time.monotonic() - started_s < 3 * timeout_s + UNAVAILABLE_CEILING_S
    finally:
        for index in range(3):
            cluster.resume(index)
    # Afterwards the key holds one of the two documents: the write may have been applied.
    got, _ = _eventually(lambda: store.get("k"))
    assert got is not None
    assert got.value in ({"v": 1}, {"v": 2})


def test_a_paused_member_costs_at_most_one_unknown_write(cluster: EtcdCluster) -> None:
    victim = _follower(cluster)
    others = [i for i in range(3) if i != victim]
    store = _store(cluster, [victim, *others], request_timeout_s=0.5)
    revision = store.create("k", {"v": 1})
    cluster.pause(victim)
    try:
        outcomes: list[str] = []
        for value in range(2, 5):
            current = store.get("k")  # reads skip the paused member
            assert current is not None
            try:
                revision = store.compare_and_set(
                    "k", {"v": value}, expected_revision=current.revision
                )
                outcomes.append("ok")
            except OutcomeUnknown:
                outcomes.append("unknown")
        assert outcomes.count("unknown") <= 1
        assert outcomes[-1] == "ok"
    finally:
        cluster.resume(victim)
    got = store.get("k")
    assert got is not None
    assert (got.value, got.revision) == ({"v": 4}, revision)


def test_conflicts_are_not_store_failures(cluster: EtcdCluster) -> None:
    store = open_store(cluster.url)
    revision = store.create("k", {"v": 1})
    with pytest.raises(Conflict, match="already exists"):
        store.create("k", {})
    with pytest.raises(Conflict, match="does not exist"):
        store.compare_and_set("missing", {}, expected_revision=revision)
    with pytest.raises(Conflict, match="changed since"):
        store.delete("k", expected_revision=str(int(revision) + 1000))
    for odd in ("0", "-1", "007", " 1", "1.0", ""):
        with pytest.raises(Conflict):
            store.compare_and_set("k", {"v": 2}, expected_revision=odd)
    assert not issubclass(Conflict, (StoreUnavailable, OutcomeUnknown))
    assert issubclass(Conflict, StoreError)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"connect_timeout_s": -1}, "connect_timeout_s"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"prefix": "no-slash"}, "prefix"),
        ({"prefix": "/abs/"}, "prefix"),
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        EtcdStore([("127.0.0.1", 2379)], check_reachable=False, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="member"):
        EtcdStore([], check_reachable=False)
