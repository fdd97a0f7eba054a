"""Rolling updates under steady load, with real processes: `bfm demo --headless` runs the
update scenarios (``failover.chaos.demo_update``) and the checker judges the traffic.

- a full release: all six components at both worker sites, and the OS (a real restart of
  the site's process and components) and cluster of every site, with 0 acked lost;
- a bad EAP version that passes readiness and then refuses every message: the gate
  fails under load and site a is rolled back, nothing lost, b never touched;
- the leading controller killed (kill -9) mid-update: the next leader resumes it.

Each run's traffic ends 10 s after the update did (``--settle``), its ``--duration``
only a ceiling. After each run the store is read for the update's outcome and the
versions the sites report. Times are asserted only under ceilings that catch a hang.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from demo_runs import assert_judged_clean, run_demo

from failover.adapters.store_url import open_store
from failover.core.topology import default_topology
from failover.core.update_state import Outcome, Phase, UpdateState
from failover.runtime.update_admin import current_versions, read_update

pytestmark = pytest.mark.scenario
COMPONENTS = ("aam", "backbone", "eap", "eep", "gsm", "msm")
SETTLE_S = 10.0  # the traffic ends this long after the update ended (--duration: a ceiling)


def _outcome(run_dir: Path, data: dict[str, Any]) -> tuple[UpdateState, dict[str, dict[str, str]]]:
    store = open_store(f"sqlite://{run_dir / 'bfm.db'}")
    try:
        state, _ = read_update(store)
        assert state is not None, f"no update was started: {data.get('steps_not_run')}"
        versions = current_versions(store, default_topology(shards_per_component=4))
        return state, {s: dict(v) for s, v in versions.items()}
    finally:
        store.close()


def _healed(data: dict[str, Any]) -> bool:
    return any(f["kind"] == "update" and f["action"] == "heal" for f in data["faults"])


def test_a_full_release_under_load_loses_nothing(tmp_path: Path) -> None:
    done, data = run_demo(
        tmp_path,
        "rolling-update",
        duration_s=300,
        rate=150,
        shards=4,
        timeout_s=480,
        settle_s=SETTLE_S,
    )
    assert_judged_clean(done, data)
    state, versions = _outcome(tmp_path / "run", data)
    assert state.outcome is Outcome.SUCCEEDED, state.reason
    assert _healed(data), "the demo ended before the update did"
    for site in ("a", "b"):
        assert {c: versions[site][c] for c in COMPONENTS} == dict.fromkeys(COMPONENTS, "2.0.0")
    for site in ("a", "b", "w"):
        assert versions[site]["os:debian"] == "12.6"
        assert versions[site]["cluster:k3s"] == "1.30.2"
    even = {c: {"a": 2, "b": 2} for c in COMPONENTS}
    assert data["shards_per_site"] == even


def test_a_bad_version_is_rolled_back_under_load(tmp_path: Path) -> None:
    done, data = run_demo(
        tmp_path, "bad-update", duration_s=150, rate=150, shards=4, settle_s=SETTLE_S
    )
    assert_judged_clean(done, data)
    state, versions = _outcome(tmp_path / "run", data)
    assert state.outcome is Outcome.ROLLED_BACK, state.reason
    assert "error ratio" in state.reason
    assert versions["a"]["eap"] == "1.0.0" and versions["b"]["eap"] == "1.0.0"
    b_steps = [p for s, p in zip(state.steps, state.phases, strict=True) if s.site == "b"]
    assert b_steps and all(p is Phase.SKIPPED for p in b_steps), "b was touched"
    assert data["shards_per_site"] == {c: {"a": 2, "b": 2} for c in COMPONENTS}


def test_a_leader_killed_mid_update_is_resumed_by_the_next(tmp_path: Path) -> None:
    done, data = run_demo(
        tmp_path,
        "update-leader-crash",
        duration_s=200,
        rate=150,
        shards=4,
        timeout_s=400,
        settle_s=SETTLE_S,
    )
    assert_judged_clean(done, data)
    assert {f["kind"] for f in data["faults"]} == {"update", "leader_crash"}
    at = {(f["kind"], f["action"]): f["at_s"] for f in data["faults"]}
    assert at[("update", "inject")] < at[("leader_crash", "inject")] < at[("update", "heal")]
    state, versions = _outcome(tmp_path / "run", data)
    assert state.outcome is Outcome.SUCCEEDED, state.reason
    for site in ("a", "b"):
        assert {c: versions[site][c] for c in COMPONENTS} == dict.fromkeys(COMPONENTS, "2.0.0")
