"""`bfm update plan|apply|status|abort` against a system on a sqlite store.

Agents a and b, the controller at w and each site's version reporter (``SiteVersions`` on
an in-memory platform) run in this process on a fake clock whose wall time starts at the
real time, so the commands, which judge leases and reports by the wall clock, see live
sites. The executor runs as the leader would (``UpdateRunner``), driven by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from update_world import MemoryPlatform

from failover.adapters.fake_clock import FakeClock
from failover.adapters.sqlite_store import SqliteStore
from failover.cli.main import run
from failover.core.controller import PlacementPolicy
from failover.core.detector import DetectorTiming
from failover.core.licensing import LicenseState
from failover.core.quorum import LeaseTiming
from failover.core.topology import default_topology
from failover.runtime.controller import ControllerRuntime
from failover.runtime.documents import lease_key
from failover.runtime.license_docs import LicenseStatus, write_status
from failover.runtime.site_agent import SiteAgentRuntime
from failover.runtime.site_versions import SiteVersions
from failover.runtime.update_admin import read_update
from failover.runtime.update_runner import RunnerSettings, UpdateRunner

TOPOLOGY = default_topology(shards_per_component=4)
STEP_S = 0.1
RELEASE = """\
version: "2.0"
components: {backbone: "2.0.0", eep: "2.0.0", eap: "2.0.0", aam: "2.0.0", msm: "2.0.0",
             gsm: "2.0.0"}
site_steps:
  w: [{kind: cluster, name: k3s, version: "1.30.2"}]
"""


class System:
    def __init__(self, db: Path) -> None:
        self.url = f"sqlite://{db}"
        self.store = SqliteStore(db)
        self.clock = FakeClock(start_wall_s=time.time())
        self.platform = MemoryPlatform()
        self.agents = {
            site: SiteAgentRuntime(
                site,
                store=self.store,
                clock=self.clock,
                topology=TOPOLOGY,
                timing=LeaseTiming(),
                detector=DetectorTiming(),
                probe=lambda component: True,
            )
            for site in TOPOLOGY.workers
        }
        self.controller = ControllerRuntime(
            "w",
            store=self.store,
            clock=self.clock,
            topology=TOPOLOGY,
            timing=LeaseTiming(),
            detector=DetectorTiming(),
            policy=PlacementPolicy(),
        )
        self.versions = [
            SiteVersions(
                s,
                store=self.store,
                clock=self.clock,
                topology=TOPOLOGY,
                platform=self.platform if s in TOPOLOGY.workers else None,  # type: ignore[arg-type]
                ready=lambda c: True,
                health=lambda c, s=s: self.platform.health(s, c),  # type: ignore[misc]
                on_reboot=lambda: None,
            )
            for s in TOPOLOGY.site_names
        ]
        self.runner = UpdateRunner(
            self.store, topology=TOPOLOGY, clock=self.clock, settings=RunnerSettings(0.1)
        )
        self.run(12.0)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP_S)):
            for agent in self.agents.values():
                agent.renew()
                agent.poll()
            self.controller.tick()
            for versions in self.versions:
                versions.tick()
            self.runner.tick()
            self.clock.advance(STEP_S)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path / "bfm.db")
    yield running
    running.store.close()


@pytest.fixture
def release(tmp_path: Path) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(RELEASE)
    return path


def bfm(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_the_steps_from_the_reported_versions(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = bfm(capsys, "update", "plan", str(release), f"--store={system.url}")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("release 2.0: 26 steps")
    assert "w: update cluster k3s ? -> 1.30.2" in out
    assert "a: update eep 1.0.0 -> 2.0.0" in out
    assert out.index("a: update eep") < out.index("a: update backbone") < out.index("b: drain")
    code, out, _ = bfm(capsys, "update", "plan", str(release), f"--store={system.url}", "--json")
    assert code == 0 and len(json.loads(out)["steps"]) == 26


def test_apply_runs_through_the_leader_and_status_follows(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = bfm(
        capsys, "update", "apply", str(release), "--dry-run", f"--store={system.url}"
    )
    assert code == 0 and "dry run: nothing was started" in out
    assert read_update(system.store) == (None, "")

    args = ("update", "apply", str(release), "--no-wait", "--soak=1s", f"--store={system.url}")
    code, out, err = bfm(capsys, *args)
    assert code == 1, "--no-wait stops following at once: exit 1 until it succeeded"
    assert "update to release 2.0 started" in out and "update goes on" in err

    code, out, err = bfm(capsys, *args)
    assert code == 1 and "still running" in err and "bfm update abort" in err

    system.run(120.0)
    code, out, _ = bfm(capsys, "update", "status", f"--store={system.url}")
    assert code == 0
    assert out.startswith("release 2.0: succeeded (update)"), out


def test_abort_leaves_undrain_and_rebalance_only(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bfm(capsys, "update", "apply", str(release), "--no-wait", f"--store={system.url}")
    system.run(3.0)
    code, out, _ = bfm(capsys, "update", "abort", f"--store={system.url}")
    assert code == 0 and "aborting the update" in out
    system.run(60.0)
    state, _ = read_update(system.store)
    assert state is not None and state.outcome.value == "aborted"
    code, out, _ = bfm(capsys, "update", "abort", f"--store={system.url}")
    assert code == 0 and "already ended: aborted" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: [1", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ('version: "2"\ncomponents: {eap: "2.0.0"}\n', "not valid"),
        ('version: "2"\ncomponets: {}\n', "componets"),
    ],
)
def test_a_bad_manifest_is_a_usage_error(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = bfm(capsys, "update", "apply", str(path), f"--store={system.url}")
    assert code == 2 and expected in err, err
    assert read_update(system.store) == (None, "")


def test_a_missing_manifest_is_a_usage_error(
    system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = bfm(
        capsys, "update", "plan", str(tmp_path / "nope.yaml"), f"--store={system.url}"
    )
    assert code == 2 and "cannot read the manifest" in err


def test_apply_is_refused_while_a_site_is_down(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system.agents.pop("b")  # b stops renewing, and its lease is gone (the fake clock
    got = system.store.get(lease_key("b"))  # runs ahead of the wall clock the CLI reads)
    assert got is not None
    system.store.delete(lease_key("b"), expected_revision=got.revision)
    code, _, err = bfm(capsys, "update", "apply", str(release), f"--store={system.url}")
    assert code == 1 and "site(s) b down" in err, err
    assert read_update(system.store) == (None, "")


def test_apply_is_refused_while_a_site_is_drained(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bfm(capsys, "drain", "a", f"--store={system.url}")[0] == 0
    code, _, err = bfm(capsys, "update", "apply", str(release), f"--store={system.url}")
    assert code == 1 and "drained by an operator" in err, err


def test_status_without_an_update(system: System, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = bfm(capsys, "update", "status", f"--store={system.url}")
    assert code == 0 and out.strip() == "no update was ever started"


def test_status_shows_the_running_update(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bfm(capsys, "update", "apply", str(release), "--no-wait", f"--store={system.url}")
    system.run(2.0)
    code, out, _ = bfm(capsys, "status", f"--store={system.url}")
    assert code == 0
    assert "update: release 2.0 running (update), step " in out
    code, out, _ = bfm(capsys, "status", f"--store={system.url}", "--json")
    assert json.loads(out)["update"]["outcome"] == "running"


def test_apply_is_refused_when_unlicensed(
    system: System, release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "no live site presents a valid dongle; install a valid license file"
    status = LicenseStatus(
        LicenseState.UNLICENSED, reason, "sys-1", 60.0, 0.0, 1.0, None, (), ("a", "b", "w")
    )
    write_status(system.store, status)
    code, _, err = bfm(capsys, "update", "apply", str(release), f"--store={system.url}")
    assert code == 1
    assert "refused because the system is unlicensed" in err and reason in err
    assert read_update(system.store)[0] is None
    write_status(
        system.store,
        LicenseStatus(
            LicenseState.GRACE, "grace", "sys-1", 60.0, 30.0, 1.0, None, (), ("a", "b", "w")
        ),
    )
    bfm(capsys, "update", "apply", str(release), f"--store={system.url}", "--no-wait")
    assert read_update(system.store)[0] is not None  # in grace everything still works
