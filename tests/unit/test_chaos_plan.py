"""`bfm chaos` without running anything: the random plan, and bad command lines.

The plan's faults only capture the system they act on when they are built; nothing here
touches a network or a process (the runs themselves: tests/scenarios/test_chaos.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from failover.chaos.chaos_run import FAULT_AT_S, SCENARIOS, ChaosRun
from failover.chaos.netsystem import NetSystem
from failover.core.topology import default_topology

TOPOLOGY = default_topology(shards_per_component=8)
FAKE = cast(NetSystem, SimpleNamespace(net=None, launcher=None, etcd=None, topology=TOPOLOGY))


def _plan(seed: int, duration_s: float = 120.0) -> list[tuple[float, str, str, str]]:
    run = ChaosRun(Path("/nonexistent"), TOPOLOGY, duration_s, seed=seed)
    return [(s.at_s, s.kind, s.target, s.action) for s in run.plan(FAKE)]


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)


def test_random_faults_come_one_at_a_time_inside_the_run() -> None:
    for seed in range(20):
        steps = _plan(seed)
        assert steps, seed
        assert steps[0][0] == FAULT_AT_S
        actions = [action for _, _, _, action in steps]
        assert actions == ["inject", "heal"] * (len(steps) // 2)  # never two at once
        times = [at for at, _, _, _ in steps]
        assert times == sorted(times)
        assert times[-1] <= 120.0 - 3.0


def test_many_seeds_cover_every_kind_of_fault() -> None:
    kinds = {kind for seed in range(40) for _, kind, _, _ in _plan(seed)}
    assert kinds == {
        "site_isolation",
        "pair_cut",
        "one_way_cut",
        "link_flap",
        "leader_pause",
        "owner_pause",
        "component_crash",
        "site_crash",
        "store_member_crash",
    }


def test_each_scenario_is_one_fault_healed_later() -> None:
    for scenario in SCENARIOS:
        run = ChaosRun(Path("/nonexistent"), TOPOLOGY, 30.0, scenario=scenario)
        steps = run.plan(FAKE)
        assert [s.action for s in steps] == ["inject", "heal"], scenario
        assert steps[0].kind == steps[1].kind


def test_a_scenario_and_a_seed_together_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        ChaosRun(Path("/x"), TOPOLOGY, 30.0, scenario="isolate-a", seed=1)
    with pytest.raises(ValueError, match="unknown scenario"):
        ChaosRun(Path("/x"), TOPOLOGY, 30.0, scenario="isolate-q")


def _bfm(*args: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "failover", "chaos", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either --scenario ID or --random --seed N"),
        (("--scenario", "isolate-q"), "is not one of isolate-a"),
        (("--random",), "--random needs --seed N"),
        (("--scenario", "isolate-a", "--random", "--seed", "1"), "give either"),
        (("--scenario", "isolate-a", "--duration", "5s"), "too short"),
    ],
)
def test_bad_command_lines_exit_2_naming_the_fix(args: tuple[str, ...], message: str) -> None:
    done = _bfm(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
