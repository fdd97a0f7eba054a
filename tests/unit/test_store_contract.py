"""Contract tests every CoordinationStore backend passes (ARCHITECTURE.md section 7).

The ``store`` fixture runs each contract test once per entry of ``STORE_FACTORIES``; a new
backend (kubernetes) joins by adding one factory there. The etcd entry runs against a real
3-member cluster started once for this module (``etcd_cluster``); each test gets its own
key prefix, so each sees an empty store. Tests of one backend's own
behaviour (the memory store's fault hook, sqlite file errors) and of ``open_store`` sit in
the clearly marked sections at the end.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.kube_double import KubeApiDouble

from failover.adapters.etcd_cluster import EtcdCluster, etcd_binary
from failover.adapters.etcd_store import EtcdStore
from failover.adapters.kubernetes_rbac import KUBERNETES_API_USE
from failover.adapters.kubernetes_store import KubernetesStore
from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.adapters.store_url import StoreUrlError, open_store
from failover.ports import (
    Conflict,
    CoordinationStore,
    OutcomeUnknown,
    StoreUnavailable,
)

StoreFactory = Callable[[pytest.FixtureRequest, Path], CoordinationStore]


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real 3-member etcd cluster for this module; every member is stopped at the end."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian: apt-get install -y etcd-server)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd-contract")) as cluster:
        yield cluster


def _memory_store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinationStore:
    return open_store("memory://")


def _sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinationStore:
    return open_store(f"sqlite://{tmp_path / 'bfm.db'}")


def _etcd_store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinationStore:
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    # A fresh prefix per test: the shared cluster looks empty to each test.
    return open_store(f"{cluster.url}/contract-{uuid.uuid4().hex}/")


@pytest.fixture(scope="module")
def kube_api() -> Iterator[KubeApiDouble]:
    """One Kubernetes API double (kmock, extended: tests/support/kube_double.py) for this
    module. At the end, every request the store sent must be in KUBERNETES_API_USE."""
    with KubeApiDouble() as double:
        yield double
        outside = sorted(
            {(r.verb, r.group, r.resource) for r in double.requests()}
            - {(verb, u.group, u.resource) for u in KUBERNETES_API_USE for verb in u.verbs}
        )
    assert not outside, f"requests outside failover/adapters/kubernetes_rbac.py: {outside}"


def _kubernetes_store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinationStore:
    double: KubeApiDouble = request.getfixturevalue("kube_api")
    # A fresh namespace per test: the shared API server looks empty to each test.
    namespace = f"contract-{uuid.uuid4().hex[:20]}"
    double.add_namespace(namespace)
    return KubernetesStore(double.configuration(), namespace=namespace)


# One entry per backend; the key is the pytest id.
STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": _memory_store,
    "sqlite": _sqlite_store,
    "etcd": _etcd_store,
    "kubernetes": _kubernetes_store,
}

# Ceilings only catch hangs; they are many times what any healthy backend needs.
HANG_CEILING_S = 10.0
THREAD_TIMEOUT_S = 30.0


@pytest.fixture(params=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CoordinationStore]:
    opened = STORE_FACTORIES[request.param](request, tmp_path)
    yield opened
    opened.close()


# --- get / create / compare_and_set / delete -------------------------------------------------


def test_get_missing_key_returns_none(store: CoordinationStore) -> None:
    assert store.get("sites/nowhere") is None


def test_create_then_get_returns_document_and_revision(store: CoordinationStore) -> None:
    revision = store.create("sites/a", {"name": "a", "up": True})
    got = store.get("sites/a")
    assert got is not None
    assert (got.key, dict(got.value), got.revision) == (
        "sites/a",
        {"name": "a", "up": True},
        revision,
    )
    assert isinstance(revision, str)


def test_create_existing_key_conflicts_and_keeps_document(store: CoordinationStore) -> None:
    revision = store.create("sites/a", {"v": 1})
    with pytest.raises(Conflict):
        store.create("sites/a", {"v": 2})
    got = store.get("sites/a")
    assert got is not None
    assert (dict(got.value), got.revision) == ({"v": 1}, revision)


def test_compare_and_set_with_current_revision_replaces(store: CoordinationStore) -> None:
    first = store.create("k", {"v": 1})
    second = store.compare_and_set("k", {"v": 2}, expected_revision=first)
    got = store.get("k")
    assert got is not None
    assert (dict(got.value), got.revision) == ({"v": 2}, second)


def test_compare_and_set_with_stale_revision_conflicts(store: CoordinationStore) -> None:
    first = store.create("k", {"v": 1})
    second = store.compare_and_set("k", {"v": 2}, expected_revision=first)
    with pytest.raises(Conflict):
        store.compare_and_set("k", {"v": 3}, expected_revision=first)
    with pytest.raises(Conflict):
        store.compare_and_set("k", {"v": 3}, expected_revision="not-a-revision")
    got = store.get("k")
    assert got is not None
    assert (dict(got.value), got.revision) == ({"v": 2}, second)


def test_compare_and_set_on_missing_key_conflicts(store: CoordinationStore) -> None:
    other = store.create("other", {})
    with pytest.raises(Conflict):
        store.compare_and_set("missing", {"v": 1}, expected_revision=other)
    assert store.get("missing") is None


def test_delete_with_current_revision_removes_key(store: CoordinationStore) -> None:
    revision = store.create("k", {"v": 1})
    store.delete("k", expected_revision=revision)
    assert store.get("k") is None


def test_delete_with_stale_revision_conflicts(store: CoordinationStore) -> None:
    first = store.create("k", {"v": 1})
    second = store.compare_and_set("k", {"v": 2}, expected_revision=first)
    with pytest.raises(Conflict):
        store.delete("k", expected_revision=first)
    got = store.get("k")
    assert got is not None
    assert got.revision == second


def test_delete_missing_key_conflicts(store: CoordinationStore) -> None:
    other = store.create("other", {})
    with pytest.raises(Conflict):
        store.delete("missing", expected_revision=other)


def test_revisions_differ_after_every_write_even_for_a_recreated_key(
    store: CoordinationStore,
) -> None:
    # Revisions are compared for equality only; nothing here orders or parses them.
    seen = [store.create("k", {"v": 0})]
    for value in range(1, 4):
        seen.append(store.compare_and_set("k", {"v": value}, expected_revision=seen[-1]))
    seen.append(store.compare_and_set("k", {"v": 3}, expected_revision=seen[-1]))  # same doc
    store.delete("k", expected_revision=seen[-1])
    seen.append(store.create("k", {"v": 0}))
    seen.append(store.create("other", {"v": 0}))
    assert all(isinstance(revision, str) for revision in seen)
    assert len(set(seen)) == len(seen)
    with pytest.raises(Conflict):  # a revision from before the delete must not match again
        store.compare_and_set("k", {"v": 9}, expected_revision=seen[0])


# --- list ------------------------------------------------------------------------------------


def test_list_returns_prefix_matches_sorted_by_key(store: CoordinationStore) -> None:
    keys = ["sites/b", "sites/a", "sites/z", "sites/é", "sites/c/x", "sitesx", "other/a"]
    revisions = {key: store.create(key, {"key": key}) for key in keys}
    listing = store.list("sites/")
    assert [v.key for v in listing] == sorted(k for k in keys if k.startswith("sites/"))
    assert all(v.revision == revisions[v.key] and v.value == {"key": v.key} for v in listing)
    assert [v.key for v in store.list("")] == sorted(keys)
    assert store.list("nothing/") == []


def test_list_prefix_has_no_wildcards(store: CoordinationStore) -> None:
    for key in ["a_b/1", "axb/1", "a%b/1", "aXYb/1", "A_B/1"]:
        store.create(key, {})
    assert [v.key for v in store.list("a_b/")] == ["a_b/1"]
    assert [v.key for v in store.list("a%b/")] == ["a%b/1"]


# --- documents -------------------------------------------------------------------------------

ROUND_TRIP_DOCS: list[dict[str, Any]] = [
    {},
    {"int": 7, "negative": -3, "big": 2**53 + 1, "float": 0.1, "exp": 1.5e-300},
    {"true": True, "false": False, "none": None, "empty_list": [], "empty_dict": {}},
    {"nested": {"list": [1, [2, [3, {"deep": "yes"}]]], "mixed": [None, 1.0, "x", False]}},
    {"unicode": 'Grüße, 東京, emoji 🚀, nul \u0000, quote " backslash \\', "ключ": "значение"},
    {"lone surrogate": "\ud800", "astral": "\U0001f600", "bom": "\ufeff"},
    {"lease": {"holder": "site-a", "renew_count": 12, "lease_duration_s": 10.0}},
]


@pytest.mark.parametrize("doc", ROUND_TRIP_DOCS)
def test_documents_round_trip_json_types(store: CoordinationStore, doc: dict[str, Any]) -> None:
    revision = store.create("doc", doc)
    got = store.get("doc")
    assert got is not None
    assert got.value == doc
    assert json.dumps(got.value, sort_keys=True) == json.dumps(doc, sort_keys=True)
    assert {type(v) for v in got.value.values()} == {type(v) for v in doc.values()}
    changed = {**doc, "extra": 1}
    store.compare_and_set("doc", changed, expected_revision=revision)
    assert [v.value for v in store.list("doc")] == [changed]


def test_documents_are_isolated_copies(store: CoordinationStore) -> None:
    original: dict[str, Any] = {"owners": {"shard-1": "a"}, "history": [1, 2]}
    store.create("doc", original)
    original["owners"]["shard-1"] = "mutated after create"
    original["history"].append(3)

    got = store.get("doc")
    assert got is not None
    assert isinstance(got.value, dict)
    got.value["owners"]["shard-1"] = "mutated after get"
    got.value["history"].clear()
    listed = store.list("doc")[0].value
    assert isinstance(listed, dict)
    listed["new"] = True

    again = store.get("doc")
    assert again is not None
    assert again.value == {"owners": {"shard-1": "a"}, "history": [1, 2]}


class _Unserialisable:
    pass


def _circular() -> dict[str, Any]:
    doc: dict[str, Any] = {"a": []}
    doc["a"].append(doc)
    return doc


NON_JSON_VALUES: list[Any] = [
    ["a list", "not a mapping"],
    "a string",
    None,
    {"set": {1, 2}},
    {"bytes": b"x"},
    {"tuple": (1, 2)},
    {"nan": float("nan")},
    {"inf": [float("inf")]},
    {1: "non-string key"},
    {"nested": {None: "non-string key"}},
    {"object": _Unserialisable()},
    _circular(),
]


@pytest.mark.parametrize("bad", NON_JSON_VALUES, ids=lambda v: type(v).__name__)
def test_non_json_values_are_rejected_and_nothing_is_written(
    store: CoordinationStore, bad: Any
) -> None:
    with pytest.raises(ValueError, match="fresh-key"):
        store.create("fresh-key", bad)
    assert store.get("fresh-key") is None

    revision = store.create("kept-key", {"v": 1})
    with pytest.raises(ValueError, match="kept-key"):
        store.compare_and_set("kept-key", bad, expected_revision=revision)
    got = store.get("kept-key")
    assert got is not None
    assert (dict(got.value), got.revision) == ({"v": 1}, revision)


@pytest.mark.parametrize("key", ["", "line\nbreak", "lone \ud800 surrogate"])
def test_unusable_keys_are_rejected(store: CoordinationStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        store.create(key, {})
    assert store.list("") == []


# --- wait_for_change -------------------------------------------------------------------------


def _revisions(store: CoordinationStore, prefix: str) -> dict[str, str]:
    return {v.key: v.revision for v in store.list(prefix)}


def test_wait_returns_at_once_when_listing_already_differs(store: CoordinationStore) -> None:
    store.create("w/a", {"v": 1})
    started_s = time.monotonic()
    added = store.wait_for_change("w/", {}, timeout_s=60)
    deleted = store.wait_for_change("w/", {**_revisions(store, "w/"), "w/gone": "x"}, timeout_s=60)
    assert time.monotonic() - started_s < HANG_CEILING_S
    assert [v.key for v in added] == ["w/a"] == [v.key for v in deleted]


def test_wait_returns_after_a_write_from_another_thread(store: CoordinationStore) -> None:
    revision = store.create("w/a", {"v": 1})
    writer = threading.Timer(
        0.1, lambda: store.compare_and_set("w/a", {"v": 2}, expected_revision=revision)
    )
    started_s = time.monotonic()
    writer.start()
    try:
        listing = store.wait_for_change("w/", {"w/a": revision}, timeout_s=60)
    finally:
        writer.join(THREAD_TIMEOUT_S)
    assert time.monotonic() - started_s < HANG_CEILING_S
    assert [(v.key, v.value) for v in listing] == [("w/a", {"v": 2})]
    assert listing[0].revision != revision


def test_wait_returns_after_a_delete_from_another_thread(store: CoordinationStore) -> None:
    revision = store.create("w/a", {"v": 1})
    writer = threading.Timer(0.1, lambda: store.delete("w/a", expected_revision=revision))
    writer.start()
    try:
        listing = store.wait_for_change("w/", {"w/a": revision}, timeout_s=60)
    finally:
        writer.join(THREAD_TIMEOUT_S)
    assert listing == []


def test_wait_times_out_when_nothing_changes(store: CoordinationStore) -> None:
    known = {"w/a": store.create("w/a", {"v": 1})}
    started_s = time.monotonic()
    listing = store.wait_for_change("w/", known, timeout_s=0.3)
    elapsed_s = time.monotonic() - started_s
    assert 0.25 <= elapsed_s < HANG_CEILING_S
    assert {v.key: v.revision for v in listing} == known


def test_wait_ignores_changes_and_known_keys_outside_the_prefix(
    store: CoordinationStore,
) -> None:
    known = {"w/a": store.create("w/a", {"v": 1}), "elsewhere/x": "ignored"}
    writer = threading.Timer(0.05, lambda: store.create("wx/b", {"v": 1}))
    started_s = time.monotonic()
    writer.start()
    try:
        listing = store.wait_for_change("w/", known, timeout_s=0.4)
    finally:
        writer.join(THREAD_TIMEOUT_S)
    assert 0.35 <= time.monotonic() - started_s < HANG_CEILING_S
    assert [v.key for v in listing] == ["w/a"]


# --- concurrency: leases and increments ------------------------------------------------------


def test_competing_lease_holders_exactly_one_wins_each_round(store: CoordinationStore) -> None:
    key, rounds = "leases/controller", 20
    store.create(key, {"holder": None, "renew_count": 0, "lease_duration_s": 10.0})
    both_read = threading.Barrier(2, timeout=THREAD_TIMEOUT_S)
    both_wrote = threading.Barrier(2, timeout=THREAD_TIMEOUT_S)

    def contend(holder: str) -> list[bool]:
        won: list[bool] = []
        for _ in range(rounds):
            lease = store.get(key)
            assert lease is not None
            both_read.wait()  # both now hold the same revision; neither has written
            renewed = {
                **lease.value,
                "holder": holder,
                "renew_count": lease.value["renew_count"] + 1,
            }
            try:
                store.compare_and_set(key, renewed, expected_revision=lease.revision)
                won.append(True)
            except Conflict:
                won.append(False)
            both_wrote.wait()
        return won

    with ThreadPoolExecutor(max_workers=2) as pool:
        a_future, b_future = pool.submit(contend, "site-a"), pool.submit(contend, "site-b")
        a_won, b_won = a_future.result(THREAD_TIMEOUT_S), b_future.result(THREAD_TIMEOUT_S)

    assert [a + b for a, b in zip(a_won, b_won, strict=True)] == [1] * rounds
    final = store.get(key)
    assert final is not None
    assert final.value["renew_count"] == rounds
    assert final.value["holder"] == ("site-a" if a_won[-1] else "site-b")


def test_concurrent_increments_lose_no_update(store: CoordinationStore) -> None:
    threads, increments = 4, 25
    store.create("counter", {"count": 0})

    def increment() -> list[int]:
        written: list[int] = []
        while len(written) < increments:
            current = store.get("counter")
            assert current is not None
            value = current.value["count"] + 1
            try:
                store.compare_and_set(
                    "counter", {"count": value}, expected_revision=current.revision
                )
            except Conflict:
                continue
            written.append(value)
        return written

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(increment) for _ in range(threads)]
        written = [value for f in futures for value in f.result(THREAD_TIMEOUT_S)]

    assert sorted(written) == list(range(1, threads * increments + 1))
    final = store.get("counter")
    assert final is not None
    assert final.value == {"count": threads * increments}


def test_closed_store_refuses_calls_as_unavailable(store: CoordinationStore) -> None:
    store.create("k", {"v": 1})
    store.close()
    with pytest.raises(StoreUnavailable):
        store.get("k")
    with pytest.raises(StoreUnavailable):
        store.create("other", {})
    store.close()  # closing twice is harmless


# --- memory backend only: the fault hook ------------------------------------------------------


@pytest.fixture
def memory_store() -> Iterator[MemoryStore]:
    opened = MemoryStore()
    yield opened
    opened.close()


def test_memory_fault_unavailable_fails_every_call_and_changes_nothing(
    memory_store: MemoryStore,
) -> None:
    revision = memory_store.create("k", {"v": 1})
    memory_store.set_fault("unavailable")
    calls: list[Callable[[], object]] = [
        lambda: memory_store.get("k"),
        lambda: memory_store.list(""),
        lambda: memory_store.create("new", {}),
        lambda: memory_store.compare_and_set("k", {"v": 2}, expected_revision=revision),
        lambda: memory_store.delete("k", expected_revision=revision),
        lambda: memory_store.wait_for_change("", {}, timeout_s=0),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            call()
    memory_store.set_fault(None)
    assert _revisions(memory_store, "") == {"k": revision}


def test_memory_fault_outcome_unknown_applied_applies_writes(memory_store: MemoryStore) -> None:
    memory_store.set_fault("outcome_unknown_applied")
    with pytest.raises(OutcomeUnknown):
        memory_store.create("k", {"v": 1})
    created = memory_store.get("k")  # reads still work
    assert created is not None
    assert created.value == {"v": 1}
    with pytest.raises(OutcomeUnknown):
        memory_store.compare_and_set("k", {"v": 2}, expected_revision=created.revision)
    updated = memory_store.get("k")
    assert updated is not None
    assert updated.value == {"v": 2}
    with pytest.raises(OutcomeUnknown):  # even a lost compare-and-set is unknown to the caller
        memory_store.compare_and_set("k", {"v": 3}, expected_revision=created.revision)
    with pytest.raises(OutcomeUnknown):
        memory_store.delete("k", expected_revision=updated.revision)
    assert memory_store.get("k") is None


def test_memory_fault_outcome_unknown_lost_drops_writes(memory_store: MemoryStore) -> None:
    revision = memory_store.create("k", {"v": 1})
    memory_store.set_fault("outcome_unknown_lost")
    for write in (
        lambda: memory_store.create("new", {}),
        lambda: memory_store.compare_and_set("k", {"v": 2}, expected_revision=revision),
        lambda: memory_store.delete("k", expected_revision=revision),
    ):
        with pytest.raises(OutcomeUnknown):
            write()
    assert _revisions(memory_store, "") == {"k": revision}
    with pytest.raises(ValueError, match="k"):  # bad input is still a ValueError
        memory_store.compare_and_set("k", {"v": {1}}, expected_revision=revision)


def test_memory_fault_wakes_a_waiter_with_unavailable(memory_store: MemoryStore) -> None:
    known = {"w/a": memory_store.create("w/a", {})}
    breaker = threading.Timer(0.1, lambda: memory_store.set_fault("unavailable"))
    breaker.start()
    try:
        with pytest.raises(StoreUnavailable):
            memory_store.wait_for_change("w/", known, timeout_s=60)
    finally:
        breaker.join(THREAD_TIMEOUT_S)


def test_memory_unknown_fault_kind_is_refused(memory_store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="fault"):
        memory_store.set_fault("slow")  # type: ignore[arg-type]


# --- sqlite backend only: the file and its errors ---------------------------------------------


def test_sqlite_missing_directory_is_unavailable_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "bfm.db"
    with pytest.raises(StoreUnavailable, match=re.escape(str(path))) as raised:
        SqliteStore(path)
    assert "does not exist" in str(raised.value)
    assert not path.parent.exists()


@pytest.mark.parametrize("kind", ["a directory", "not a database"])
def test_sqlite_unusable_path_is_unavailable_naming_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bfm.db"
    if kind == "a directory":
        path.mkdir()
    else:
        path.write_bytes(b"this is not an sqlite database, just text " * 100)
    with pytest.raises(StoreUnavailable, match=re.escape(str(path))):
        SqliteStore(path)


def test_sqlite_lock_held_beyond_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "bfm.db"
    store = SqliteStore(path, busy_timeout_s=0.1)
    revision = store.create("k", {"v": 1})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write, as far as the store knows
    try:
        with pytest.raises(StoreUnavailable, match="locked") as raised:
            store.compare_and_set("k", {"v": 2}, expected_revision=revision)
        assert str(path) in str(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.compare_and_set("k", {"v": 2}, expected_revision=revision) != revision
    store.close()


class _CommitFails:
    """Stands in for the store's connection: everything works except COMMIT."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)


def test_sqlite_error_from_commit_is_outcome_unknown(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "bfm.db")
    revision = store.create("k", {"v": 1})
    real = store._conn
    store._conn = _CommitFails(real)  # type: ignore[assignment]
    with pytest.raises(OutcomeUnknown, match=r"bfm\.db"):
        store.compare_and_set("k", {"v": 2}, expected_revision=revision)
    store._conn = real
    assert not real.in_transaction
    store.close()


def test_sqlite_data_and_revisions_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "bfm.db"
    first = SqliteStore(path)
    old_revision = first.create("k", {"v": 1})
    first.delete("k", expected_revision=old_revision)
    kept = first.create("kept", {"v": "kept"})
    first.close()

    second = open_store(f"sqlite://{path}")
    assert second.url == f"sqlite://{path}"
    got = second.get("kept")
    assert got is not None
    assert (got.value, got.revision) == ({"v": "kept"}, kept)
    assert second.create("k", {"v": 2}) not in {old_revision, kept}
    second.close()


def test_sqlite_two_stores_on_one_file_share_compare_and_set(tmp_path: Path) -> None:
    one, two = SqliteStore(tmp_path / "bfm.db"), SqliteStore(tmp_path / "bfm.db")
    revision = one.create("k", {"by": "one"})
    assert two.compare_and_set("k", {"by": "two"}, expected_revision=revision)
    with pytest.raises(Conflict):
        one.compare_and_set("k", {"by": "one again"}, expected_revision=revision)
    listing = one.wait_for_change("", {"k": revision}, timeout_s=60)
    assert [v.value for v in listing] == [{"by": "two"}]
    one.close()
    two.close()


# --- open_store ------------------------------------------------------------------------------


def test_open_store_memory_gives_a_fresh_store_each_time() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    first.create("k", {})
    assert second.get("k") is None
    assert first.url == second.url == "memory://"


def test_open_store_relative_sqlite_path_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite://run/bfm.db")
    assert store.url == f"sqlite://{tmp_path}/run/bfm.db"
    assert (tmp_path / "run" / "bfm.db").exists()
    store.close()


def test_open_store_etcd_names_every_member_and_the_prefix(etcd_cluster: EtcdCluster) -> None:
    store = open_store(f"{etcd_cluster.url}/bfm/run-1")
    assert isinstance(store, EtcdStore)
    assert store.url == f"{etcd_cluster.url}/bfm/run-1/"
    assert store.prefix == "bfm/run-1/"
    again = open_store(store.url)
    assert again.url == store.url
    revision = store.create("k", {"v": 1})
    got = again.get("k")
    assert got is not None
    assert got.revision == revision
    assert open_store(etcd_cluster.url).get("bfm/run-1/k") == got.__class__(
        key="bfm/run-1/k", value={"v": 1}, revision=revision
    )
    store.close()
    again.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("etcd://", "names no member"),
        ("etcd:///prefix/", "names no member"),
        ("etcd://127.0.0.1", "has no port"),
        ("etcd://127.0.0.1:2379,127.0.0.1", "has no port"),
        ("etcd://127.0.0.1:http", "no valid port"),
        ("etcd://127.0.0.1:0", "no valid port"),
        ("etcd://127.0.0.1:65536", "no valid port"),
        ("etcd://127.0.0.1:2379,,127.0.0.1:2380", "empty member"),
        ("etcd://127.0.0.1:2379,", "empty member"),
        ("etcd://:2379", "bad etcd member host"),
        ("etcd://[::1:2379", "bad etcd member"),
        ("etcd://127.0.0.1:2379,127.0.0.1:2379", "twice"),
        ("etcd://127.0.0.1:2379?timeout=1", "no ?options"),
        ("etcd://127.0.0.1:2379//abs/", "must not start with '/'"),
    ],
)
def test_open_store_malformed_etcd_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(StoreUrlError, match=re.escape(says)) as raised:
        open_store(url)
    assert repr(url) in str(raised.value)


def test_open_store_etcd_with_no_reachable_member_is_unavailable_naming_each() -> None:
    # Ports just released by the OS: nothing listens there.
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    url = "etcd://" + ",".join(f"127.0.0.1:{port}" for port in ports)
    started_s = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        open_store(url)
    assert time.monotonic() - started_s < HANG_CEILING_S
    message = str(raised.value)
    assert url in message
    assert all(f"127.0.0.1:{port}: " in message for port in ports)
    assert "refused" in message.lower()


@pytest.mark.parametrize(
    "url",
    ["", "bfm.db", "/var/lib/bfm.db", "memory://x", "sqlite://", "sqlite://:memory:", "redis://h"],
)
def test_open_store_malformed_urls_name_the_url_and_the_accepted_forms(url: str) -> None:
    with pytest.raises(StoreUrlError) as raised:
        open_store(url)
    message = str(raised.value)
    assert repr(url) in message
    assert "memory://" in message
    assert isinstance(raised.value, ValueError)
