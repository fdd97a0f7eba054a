"""The reference backbone with real processes: three sites, a router and six modules per
worker site, a producer; kill -9 of a whole site under traffic; judged by the checker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.adapters.sqlite_store import SqliteStore
from failover.chaos.run_check import judge
from failover.core.fencing import Ownership
from failover.core.topology import default_topology
from failover.runtime.documents import ownership_key
from failover.workload.launcher import Launcher, wait_until

TOPOLOGY = default_topology(shards_per_component=4)
CEILING_S = 60.0


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    run = Launcher(tmp_path / "run", TOPOLOGY)
    run.prepare()
    try:
        yield run
    finally:
        run.stop()


def owners(run_dir: Path) -> dict[str, list[str | None]]:
    store = SqliteStore(run_dir / "bfm.db")
    try:
        result = {}
        for c in TOPOLOGY.components:
            got = store.get(ownership_key(c))
            if got is not None:
                result[c] = [a.owner for a in Ownership.from_doc(got.value).shards]
        return result
    finally:
        store.close()


def even(run_dir: Path) -> bool:
    o = owners(run_dir)
    return len(o) == len(TOPOLOGY.components) and all(
        sorted(v) == ["a", "a", "b", "b"] for v in o.values()
    )


def produce(run_dir: Path, *, rate: int, duration_s: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "failover",
            "produce",
            f"--run-dir={run_dir}",
            f"--rate={rate}",
            f"--duration={duration_s}s",
            "--site=a",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_site_crash_under_traffic_loses_nothing(launcher: Launcher) -> None:
    run_dir = launcher.run_dir
    for site in ("a", "b", "w"):
        launcher.start_site(site)
    wait_until(lambda: even(run_dir), "even placement", ceiling_s=CEILING_S)
    producer = produce(run_dir, rate=200, duration_s=12)
    time.sleep(4)
    launcher.kill_site("a")
    wait_until(
        lambda: all(set(v) == {"b"} for v in owners(run_dir).values()),
        "b owns everything",
        ceiling_s=CEILING_S,
    )
    out, err = producer.communicate(timeout=120)
    assert producer.returncode == 0, err
    stats = json.loads(out)
    assert stats["sent"] == stats["acked"] > 1000
    report = judge(run_dir)
    print(json.dumps({"producer": stats, "report": report.to_json()}))
    assert report.acked == stats["acked"]
    assert report.acked_lost == 0
    assert report.stale_epoch_accepts == 0
    assert report.dual_owner_epochs == 0
    assert report.violations == []
