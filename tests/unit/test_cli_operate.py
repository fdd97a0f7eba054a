"""`bfm drain/undrain/switchover/rebalance/events/watch` against a system on a sqlite store.

The system (agents a and b, the controller at w) runs in this process on a fake clock whose
wall time starts at the real time, so the commands, which judge leases by the real wall
clock, see live sites; between commands the test drives it forward by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from failover.adapters.fake_clock import FakeClock
from failover.adapters.sqlite_store import SqliteStore
from failover.cli.main import app, run
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.fencing import Ownership
from failover.core.quorum import LeaseTiming
from failover.core.topology import default_topology
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import ownership_key
from failover.runtime.site_agent import SiteAgentRuntime
from failover.workload.endpoints import Endpoints

SHARDS = 4
TOPOLOGY = default_topology(shards_per_component=SHARDS)
STEP_S = 0.1


class System:
    """Agents a and b and the controller at w on one sqlite store, stepped by hand."""

    def __init__(self, db: Path) -> None:
        self.url = f"sqlite://{db}"
        self.store = SqliteStore(db)
        self.clock = FakeClock(start_wall_s=time.time())
        self.down: set[tuple[str, str]] = set()
        self.agents = [
            SiteAgentRuntime(
                site,
                store=self.store,
                clock=self.clock,
                topology=TOPOLOGY,
                timing=LeaseTiming(),
                detector=DetectorTiming(),
                probe=lambda component, site=site: (site, component) not in self.down,  # type: ignore[misc]
            )
            for site in TOPOLOGY.workers
        ]
        self.controller = ControllerRuntime(
            "w",
            store=self.store,
            clock=self.clock,
            topology=TOPOLOGY,
            timing=LeaseTiming(),
            detector=DetectorTiming(),
            policy=PlacementPolicy(),
            trace_id=lambda: "t",
        )
        self.run(3.0)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP_S)):
            for agent in self.agents:
                agent.renew()
                agent.poll()
            self.controller.tick()
            self.clock.advance(STEP_S)

    def counts(self) -> dict[str, dict[str, int]]:
        result = {}
        for c in TOPOLOGY.components:
            got = self.store.get(ownership_key(c))
            assert got is not None
            result[c] = Ownership.from_doc(got.value).counts(TOPOLOGY.workers)
        return result


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path / "bfm.db")
    yield running
    running.store.close()


def bfm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_drain_prints_what_changed_and_what_happens_next_then_undrain(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = bfm(capsys, "drain", "a", f"--store={system.url}", "--reason", "update a")
    assert (code, err) == (0, "")
    assert out.startswith("site a drained. Next: 12 shard(s) move a -> b, in batches of 4")
    assert "bfm watch" in out
    system.run(5.0)
    assert all(n == {"a": 0, "b": SHARDS} for n in system.counts().values())

    code, out, _ = bfm(capsys, "drain", "a", f"--store={system.url}")
    assert code == 0
    assert out.startswith("site a is already drained; nothing changed. Next: nothing moves")

    code, out, _ = bfm(capsys, "status", f"--store={system.url}", "--json")
    data = json.loads(out)
    assert data["admin"]["drained_sites"] == ["a"]
    assert data["admin"]["reason"] == "update a"
    assert len(data["events"]) == 5 and data["events"][-1]["kind"] == "transfer"
    code, out, _ = bfm(capsys, "status", f"--store={system.url}")
    assert "operator: drained sites: a; pinned: none" in out
    assert "latest events" in out

    code, out, _ = bfm(capsys, "undrain", "a", f"--store={system.url}")
    assert code == 0
    assert out.startswith("site a undrained. Next: 12 shard(s) move b -> a")
    system.run(5.0)
    assert all(n == {"a": 2, "b": 2} for n in system.counts().values())


def test_switchover_and_rebalance_with_json(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bfm(capsys, "switchover", "eap", "--to", "b", f"--store={system.url}", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["changed"] and data["after"]["pinned"] == {"eap": "b"}
    assert data["summary"] == "eap pinned to b"
    assert data["next"].startswith("2 shard(s) move a -> b")
    system.run(3.0)
    assert system.counts()["eap"] == {"a": 0, "b": SHARDS}

    code, out, _ = bfm(capsys, "rebalance", f"--store={system.url}")
    assert code == 0
    assert out.startswith("eap unpinned. Next: 2 shard(s) move b -> a")
    code, out, _ = bfm(capsys, "rebalance", f"--store={system.url}")
    assert out.startswith("nothing is pinned; the controller evens the split out by itself")


def test_events_with_since_and_json(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = bfm(capsys, "events", f"--store={system.url}", "--json")
    assert code == 0
    events = json.loads(out)
    assert [e["kind"] for e in events] == ["initial"] * len(TOPOLOGY.components)
    assert events[0]["sequence"] == 1 and events[0]["leader"] == "w"
    code, out, _ = bfm(capsys, "events", f"--store={system.url}")
    assert "initial" in out and "->" in out
    code, out, _ = bfm(capsys, "events", f"--store={system.url}", "--since=2999-01-01T00:00:00Z")
    assert (code, out) == (0, "no events in that time\n")
    code, out, _ = bfm(capsys, "events", f"--store={system.url}", "--since=1h", "--json")
    assert len(json.loads(out)) == len(TOPOLOGY.components)
    code, _, err = bfm(capsys, "events", f"--store={system.url}", "--since=yesterday")
    assert code == 2 and "'yesterday' is not a point in time" in err


def test_bad_names_exit_2_naming_the_known_ones(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bfm(capsys, "drain", "c", f"--store={system.url}")
    assert (code, err) == (2, "bfm: unknown site 'c'; known sites: a, b, w\n")
    code, _, err = bfm(capsys, "undrain", "w", f"--store={system.url}")
    assert code == 2 and "witness" in err and "worker sites: a, b" in err
    code, _, err = bfm(capsys, "switchover", "nope", "--to", "a", f"--store={system.url}")
    assert code == 2
    assert "unknown component 'nope'; known components: backbone, eep, eap, aam, msm, gsm" in err
    code, _, err = bfm(capsys, "switchover", "eap", f"--store={system.url}")
    assert code == 2 and "--to" in err


def test_refusals_exit_1_with_the_reason(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bfm(capsys, "drain", "b", f"--store={system.url}")[0] == 0
    code, _, err = bfm(capsys, "drain", "a", f"--store={system.url}")
    assert code == 1
    assert "cannot drain a: it is the last worker site that could serve (b is drained)" in err
    system.down.add(("a", "gsm"))
    system.run(1.0)
    assert bfm(capsys, "undrain", "b", f"--store={system.url}")[0] == 0
    code, _, err = bfm(capsys, "switchover", "gsm", "--to", "a", f"--store={system.url}")
    assert (code, err) == (1, "bfm: cannot switch gsm to a: gsm is not up at a.\n")


def test_no_system_or_no_store_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"sqlite://{tmp_path / 'missing.db'}"
    for command in (["drain", "a"], ["events"], ["watch", "--count=1"], ["rebalance"]):
        code, _, err = bfm(capsys, *command, f"--store={missing}")
        assert code == 3 and "does not exist" in err, command
    empty = tmp_path / "empty.db"
    SqliteStore(empty).close()
    code, _, err = bfm(capsys, "undrain", "a", f"--store=sqlite://{empty}")
    assert code == 3
    assert "no running BFM system in the store" in err and "no controller leader" in err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Endpoints(f"sqlite://{empty}", SHARDS, {}).save(run_dir)
    code, _, err = bfm(capsys, "switchover", "eap", "--to", "a", f"--run-dir={run_dir}")
    assert code == 3 and str(empty) in err
    code, _, err = bfm(capsys, "events", f"--run-dir={tmp_path}")
    assert code == 2 and "no endpoints.json" in err


def test_run_dir_finds_the_store(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Endpoints(system.url, SHARDS, {}).save(run_dir)
    code, out, _ = bfm(capsys, "drain", "b", f"--run-dir={run_dir}", "--json")
    assert code == 0 and json.loads(out)["after"]["drained_sites"] == ["b"]
    code, out, _ = bfm(capsys, "status", f"--run-dir={run_dir}", "--json")
    assert json.loads(out)["admin"]["drained_sites"] == ["b"]


def test_watch_refreshes_count_times(system: System) -> None:
    result = CliRunner().invoke(
        app, ["watch", f"--store={system.url}", "--count=2", "--interval=0"]
    )
    assert result.exit_code == 0, result.output
    assert "shards per site" in result.output
    assert "refresh every 0 s" in result.output


def test_undrain_with_canary_is_a_partial_undrain(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bfm(capsys, "drain", "a", f"--store={system.url}")[0] == 0
    system.run(5.0)
    code, out, err = bfm(capsys, "undrain", "a", "--canary", "1", f"--store={system.url}")
    assert (code, err) == (0, "")
    assert out.startswith(
        "site a undrained to a canary of 1 shard(s) per component. Next: 6 shard(s) move "
        "b -> a, in batches of 4 per component (drain, then transfer); a holds at most 1 "
        "shard(s) per component (canary)."
    )
    system.run(5.0)
    assert all(n == {"a": 1, "b": SHARDS - 1} for n in system.counts().values())

    code, out, _ = bfm(capsys, "status", f"--store={system.url}")
    line = "operator: drained sites: none; pinned: none; canary (shards per component): a at most 1"
    assert line in " ".join(out.split())
    code, out, _ = bfm(capsys, "status", f"--store={system.url}", "--json")
    assert json.loads(out)["admin"]["canary"] == {"a": 1}

    code, out, _ = bfm(capsys, "undrain", "a", "--canary=1", f"--store={system.url}", "--json")
    data = json.loads(out)
    assert code == 0 and not data["changed"]
    assert data["summary"] == "site a is already limited to a canary of 1 shard(s) per component"

    code, out, _ = bfm(capsys, "undrain", "a", f"--store={system.url}")
    assert code == 0
    assert out.startswith("site a undrained fully (canary of 1 lifted). Next: 6 shard(s) move")
    system.run(5.0)
    assert all(n == {"a": 2, "b": 2} for n in system.counts().values())


def test_undrain_with_canary_refusals_and_bad_counts(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bfm(capsys, "undrain", "a", "--canary", "0", f"--store={system.url}")
    assert code == 2 and "--canary" in err
    code, _, err = bfm(capsys, "undrain", "w", "--canary", "1", f"--store={system.url}")
    assert code == 2 and "witness" in err
    assert bfm(capsys, "drain", "b", f"--store={system.url}")[0] == 0
    code, _, err = bfm(capsys, "undrain", "a", "--canary", "1", f"--store={system.url}")
    assert code == 1
    assert err.startswith(
        "bfm: cannot limit a to a canary: no other worker site could take the rest of the "
        "work (b is drained)"
    )
    code, _, err = bfm(capsys, "undrain", "b", "--canary", "1", f"--store={system.url}")
    assert code == 0
    code, _, err = bfm(capsys, "switchover", "eap", "--to", "b", f"--store={system.url}")
    assert code == 1 and "site b is limited to a canary of 1 shard(s) per component" in err
