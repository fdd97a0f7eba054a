"""`bfm status`: what it reads from the store, and its errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from small_system import SmallSystem

from failover.adapters.fake_clock import FakeClock
from failover.adapters.memory_store import MemoryStore
from failover.adapters.sqlite_store import SqliteStore
from failover.cli.main import run
from failover.cli.status import admin_line, instances_line, read_status
from failover.core.topology import default_topology
from failover.runtime import admin
from failover.runtime.documents import ADMIN_POLICY_KEY, lease_key, ownership_key
from failover.workload.endpoints import Endpoints

TOPOLOGY = default_topology(shards_per_component=4)


def _running_system(store: MemoryStore | SqliteStore, clock: FakeClock) -> None:
    SmallSystem(store, clock, topology=TOPOLOGY).run(30)


def test_status_reads_leader_sites_and_even_ownership() -> None:
    store, clock = MemoryStore(), FakeClock()
    _running_system(store, clock)
    data = read_status(store, now_wall_s=clock.wall())
    assert data["leader"] == {"site": "w", "term": 1}
    assert set(data["sites"]) == {"a", "b"}
    assert data["sites"]["a"]["session"] == 1
    assert data["sites"]["a"]["renewed_s_ago"] < 0.5
    for c in TOPOLOGY.components:
        assert data["ownership"][c]["shards_per_site"] == {"a": 2, "b": 2}
        assert data["ownership"][c]["draining"] == 0


def test_status_shows_damaged_documents_instead_of_failing() -> None:
    store, clock = MemoryStore(), FakeClock()
    _running_system(store, clock)
    current = store.get(ownership_key("eap"))
    assert current is not None
    store.compare_and_set(
        ownership_key("eap"), {"component": 5}, expected_revision=current.revision
    )
    lease = store.get(lease_key("a"))
    assert lease is not None
    store.compare_and_set(lease_key("a"), {"holder": ""}, expected_revision=lease.revision)
    data = read_status(store, now_wall_s=clock.wall())
    assert "damaged" in data["ownership"]["eap"]
    assert "damaged" in data["sites"]["a"]
    assert data["ownership"]["eep"]["shards_per_site"] == {"a": 2, "b": 2}


def test_bfm_status_json_on_a_sqlite_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bfm.db"
    store = SqliteStore(db)
    _running_system(store, FakeClock())
    store.close()
    assert run(["status", f"--store=sqlite:///{db}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ownership"]["gsm"]["shards_per_site"] == {"a": 2, "b": 2}
    assert run(["status", f"--store=sqlite:///{db}"]) == 0
    assert "shards per site" in capsys.readouterr().out


def test_bfm_status_without_a_system_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["status", f"--store=sqlite:///{tmp_path / 'missing.db'}"]) == 3
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    SqliteStore(empty).close()
    assert run(["status", f"--store=sqlite:///{empty}"]) == 3
    assert "no BFM system found" in capsys.readouterr().err


def test_bfm_status_without_a_store_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BFM_STORE", raising=False)
    assert run(["status"]) == 2
    assert "--store" in capsys.readouterr().err
    assert run(["status", "--store=ftp://x"]) == 2


def test_status_shows_the_operators_choices_and_the_latest_events() -> None:
    store, clock = MemoryStore(), FakeClock()
    _running_system(store, clock)
    data = read_status(store, now_wall_s=clock.wall())
    assert data["admin"]["drained_sites"] == [] and data["admin"]["pinned"] == {}
    assert [e["kind"] for e in data["events"]] == ["initial"] * 5  # the newest five of six
    assert data["events"][-1]["sequence"] == 6
    admin.switchover(store, "eap", "b", topology=TOPOLOGY, clock=clock, reason="maintenance")
    data = read_status(store, now_wall_s=clock.wall(), events=2)
    assert data["admin"]["pinned"] == {"eap": "b"}
    assert data["admin"]["reason"] == "maintenance"
    assert [e["kind"] for e in data["events"]] == ["initial", "admin"]
    got = store.get(ADMIN_POLICY_KEY)
    assert got is not None
    store.compare_and_set(ADMIN_POLICY_KEY, {"pinned": []}, expected_revision=got.revision)
    assert "pinned" in read_status(store, now_wall_s=clock.wall())["admin"]["damaged"]


def test_the_operator_line_shows_a_canary_only_when_there_is_one() -> None:
    plain = admin_line({"drained_sites": ["b"], "pinned": {}, "canary": {}})
    assert plain == "operator: drained sites: b; pinned: none"
    canary = admin_line({"drained_sites": [], "pinned": {"eap": "b"}, "canary": {"a": 2}})
    assert canary == (
        "operator: drained sites: none; pinned: eap -> b; canary (shards per component): "
        "a at most 2"
    )


def test_bfm_status_finds_the_store_through_the_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bfm.db"
    store = SqliteStore(db)
    _running_system(store, FakeClock())
    store.close()
    Endpoints(f"sqlite://{db}", 4, {}).save(tmp_path)
    assert run(["status", f"--run-dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "operator: drained sites: none; pinned: none" in out
    assert "latest events" in out


def test_status_names_crash_looping_instances_the_supervisor_gave_up_on() -> None:
    store, clock = MemoryStore(), FakeClock()
    _running_system(store, clock)
    store.create(
        "platform/a/instances",
        {
            "eap": {"state": "given_up", "restarts": 4, "given_up": True, "pid": None},
            "eep": {"state": "running", "restarts": 1, "given_up": False, "pid": 7},
            "aam": {"state": "running", "restarts": 0, "given_up": False, "pid": 8},
        },
    )
    data = read_status(store, now_wall_s=clock.wall())
    assert data["instances"]["a"]["eap"]["given_up"] is True
    line = instances_line(data)
    assert "restarts: a/eep x1" in line
    assert "CRASH-LOOPING" in line
    assert "a/eap" in line
    assert "a/aam" not in line
    assert "CRASH-LOOPING" not in instances_line({"instances": {}})
