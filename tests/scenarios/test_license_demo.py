"""Licensing under load, with real processes: `bfm demo --headless` runs the license
scenarios (``failover.chaos.demo_license``) with real signed license files at each site,
and the checker judges the traffic (alarms among it). The demo records every change of
the leader's license verdict (``license/status``) and, with every dongle removed, runs
``bfm update apply`` for real.

- site a crashes: the system stays licensed (by b and w) the whole time;
- the dongles of a and b removed: licensed by w; then w's: grace, then unlicensed after
  the demo's 10 s grace; ``bfm update apply`` is refused naming the reason; every alarm is
  still delivered; the files back: licensed again;
- a tampered file at a, another system's at b, one that expires at w: each named, grace
  once w's expires, licensed again once the good files are back.

Shown to fail: with change_refused switched off the update attempt is not refused; with the
evidence's freshness ignored a crashed site's dongle keeps counting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from demo_runs import assert_judged_clean, run_demo

pytestmark = pytest.mark.scenario


def _states(data: dict[str, Any]) -> list[str]:
    """The verdict's states in order, repeats collapsed."""
    states: list[str] = []
    for entry in data["license"]["timeline"]:
        if not states or states[-1] != entry["state"]:
            states.append(entry["state"])
    return states


def _alarms_acked(run_dir: Path, from_wall_s: float, to_wall_s: float) -> int:
    """Alarms (kind alarm goes to EAP) sent in the window and acknowledged."""
    sent, acked = set(), set()
    for path in run_dir.glob("history-*.jsonl"):
        for line in path.read_text().splitlines():
            op = json.loads(line)
            if op["op"] == "send" and op["component"] == "eap":
                if from_wall_s <= op["t"] <= to_wall_s:
                    sent.add(op["id"])
            elif op["op"] == "ack":
                acked.add(op["id"])
    return len(sent & acked)


def _dongles_seen(data: dict[str, Any], site: str) -> set[str]:
    return {e["dongles"].get(site, "") for e in data["license"]["timeline"]}


def test_a_crashed_site_leaves_the_system_licensed(tmp_path: Path) -> None:
    done, data = run_demo(tmp_path, "license-site-crash", duration_s=40, rate=150, shards=4)
    assert_judged_clean(done, data)
    assert _states(data) == ["licensed"], data["license"]
    presenting = [e["presenting"] for e in data["license"]["timeline"]]
    assert ["b", "w"] in presenting, presenting  # a's evidence went stale: a did not count
    assert presenting[-1] == ["a", "b", "w"], presenting  # and a counts again once back


def test_every_dongle_removed_alarms_flow_and_an_update_is_refused(tmp_path: Path) -> None:
    done, data = run_demo(tmp_path, "license-dongles-removed", duration_s=50, rate=150, shards=4)
    assert_judged_clean(done, data)  # every acknowledged alarm delivered, none lost
    assert _states(data) == ["licensed", "grace", "unlicensed", "licensed"], data["license"]
    timeline = data["license"]["timeline"]
    unlicensed = next(e["at_wall_s"] for e in timeline if e["state"] == "grace")
    back = timeline[-1]["at_wall_s"]
    assert _alarms_acked(tmp_path / "run", unlicensed, back) > 100  # alarms flowed throughout
    by = [e["licensed_by"] for e in data["license"]["timeline"] if e["state"] == "licensed"]
    assert ["w"] in by, by  # a and b gone: w's clone licensed the system alone
    attempts = data["license"]["update_attempts"]
    assert len(attempts) == 1, attempts
    assert attempts[0]["license_state"] == "unlicensed"
    assert attempts[0]["exit_code"] == 1, attempts[0]
    assert "refused because the system is unlicensed" in attempts[0]["output"], attempts[0]
    assert "install a valid license file" in attempts[0]["output"], attempts[0]


def test_tampered_foreign_and_expired_files_are_each_named(tmp_path: Path) -> None:
    done, data = run_demo(tmp_path, "license-bad-files", duration_s=45, rate=150, shards=4)
    assert_judged_clean(done, data)
    states = _states(data)
    # the good files come back 4 s before the grace ends; a slow machine may get there late
    assert states[:2] == ["licensed", "grace"] and states[-1] == "licensed", data["license"]
    assert "tampered" in _dongles_seen(data, "a")
    assert "foreign" in _dongles_seen(data, "b")
    assert "expired" in _dongles_seen(data, "w")
    last = data["license"]["timeline"][-1]
    assert last["licensed_by"] == ["a", "b", "w"], last
