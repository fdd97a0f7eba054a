"""`bfm chaos` end to end: every scenario on real partitions, judged by the checker.

Each test runs the real command (``python -m failover chaos``): three network-namespace
sites, each with its own etcd member, site process (agent + controller replica) and, at a
and b, the backbone; the clients' producer in a namespace of its own and site a's own
devices inside a's namespace. Root and ``ip netns`` are needed: skipped with the reason
otherwise (a failure under CI=true). With ``BFM_TEST_DISABLE_FENCING=1`` the same checker
must catch the stale owner in ``pause-owner-a`` and ``isolate-a``: proof it can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from failover.chaos import netns

pytestmark = pytest.mark.scenario

SCENARIOS = (
    "isolate-a",
    "isolate-b",
    "isolate-w",
    "cut-a-b",
    "oneway-a-to-b",
    "pause-leader",
    "pause-owner-a",
    "kill-store-w",
    "flap-a",
)
DURATION_S = 25
RATE_PER_S = 500
RUN_CEILING_S = 300  # a run takes about 45 s; this only catches a hang
WAIT_CEILING_S = 20.0  # no client message may wait this long (a hang, not a target)


def _skip_reason() -> str | None:
    reason = netns.available()
    if reason is not None:
        return reason
    if shutil.which("etcd") is None:
        return "etcd is not installed (apt-get install -y etcd-server)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_namespaces() -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(f"bfm chaos needs network namespaces and etcd: {reason}")


def run_chaos(
    tmp_path: Path,
    scenario: str,
    *,
    env: dict[str, str] | None = None,
    duration_s: int = DURATION_S,
) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report.json"
    before = set(netns.namespaces())
    how = ["--random", f"--seed={scenario.split(':')[1]}"] if ":" in scenario else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "failover",
            "chaos",
            *(how or [f"--scenario={scenario}"]),
            f"--duration={duration_s}s",
            f"--rate={RATE_PER_S}",
            f"--report={report}",
            f"--run-dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_CEILING_S,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert report.exists(), f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    assert set(netns.namespaces()) <= before, "the run left namespaces behind"
    return done.returncode, json.loads(report.read_text())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_keeps_every_invariant(tmp_path: Path, scenario: str) -> None:
    code, report = run_chaos(tmp_path, scenario)
    summary = {k: report[k] for k in ("acked_lost", "stale_epoch_accepts", "dual_owner_epochs")}
    assert summary == {"acked_lost": 0, "stale_epoch_accepts": 0, "dual_owner_epochs": 0}, report
    assert report["violations"] == []
    assert code == 0
    assert report["acked"] > RATE_PER_S * DURATION_S * 0.9  # nothing given up
    assert report["unacknowledged"] == 0
    actions = [(f["action"], f["kind"]) for f in report["faults"]]
    assert [a for a, _ in actions] == ["inject", "heal"], actions
    assert report["max_unavailability_s"] < WAIT_CEILING_S, report["unavailability_s"]


@pytest.mark.parametrize("scenario", ["pause-owner-a", "isolate-a"])
def test_without_fencing_the_stale_owner_is_caught(tmp_path: Path, scenario: str) -> None:
    """A paused or cut-off owner writes stale work only if messages sat in its sockets when
    it stopped; in about one run of three none did (CI and here, pause-owner-a), and the
    checker then rightly found nothing. So a broken build gets up to three runs before the
    test calls the checker blind (two were not enough once in CI: 1 in 9); a checker that
    misses stale writes fails all three."""
    for attempt in range(3):
        where = tmp_path / f"attempt-{attempt}"
        where.mkdir()
        code, report = run_chaos(where, scenario, env={"BFM_TEST_DISABLE_FENCING": "1"})
        if report.get("stale_epoch_accepts"):
            break
    assert report["stale_epoch_accepts"] > 0, report
    assert code == 1
    assert any(v["invariant"] == "single_writer" for v in report["violations"])


def test_random_faults_keep_every_invariant(tmp_path: Path) -> None:
    """``bfm chaos --random --seed 11``: several faults one after another (the plan is
    deterministic per seed: tests/unit/test_chaos_plan.py)."""
    code, report = run_chaos(tmp_path, "random:11", duration_s=45)
    injected = [f for f in report["faults"] if f["action"] == "inject"]
    assert len(injected) >= 2, report["faults"]
    summary = {k: report[k] for k in ("acked_lost", "stale_epoch_accepts", "dual_owner_epochs")}
    assert summary == {"acked_lost": 0, "stale_epoch_accepts": 0, "dual_owner_epochs": 0}, report
    assert code == 0 and report["violations"] == []
    assert report["scenario"] == "random" and report["seed"] == 11
