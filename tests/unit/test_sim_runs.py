"""Batches of simulated runs: a batch resumed from a run index gives the same runs."""

from __future__ import annotations

from failover.chaos.sim_runs import run_all, run_seed
from failover.chaos.sim_world import SimConfig

CONFIG = SimConfig(duration_s=200.0)


def test_a_resumed_batch_runs_exactly_the_later_runs_with_their_own_seeds() -> None:
    resumed = list(run_all(CONFIG, runs=3, seed=9, jobs=1, first=2))
    assert [r.run for r in resumed] == [2]
    assert resumed[0].seed == run_seed(9, 2)
    whole = list(run_all(CONFIG, runs=3, seed=9, jobs=1))
    assert [r.run for r in whole] == [0, 1, 2]
    assert whole[2].report == resumed[0].report
