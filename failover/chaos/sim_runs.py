"""Many simulated runs: seeds, parallel workers, the aggregate report, shrunk failures."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from failover.chaos.report import Report, Violation, merge_unavailability
from failover.chaos.sim_faults import Fault, random_schedule, shrink
from failover.chaos.sim_world import SimConfig
from failover.chaos.simulation import Simulation

MAX_SHRUNK_RUNS = 2
"""Failing runs whose schedule is shrunk (each shrink re-runs the simulation many times)."""
MAX_REPORTED_VIOLATIONS = 50


def run_seed(seed: int, run: int) -> int:
    """The seed of run ``run`` of a batch seeded ``seed``: stable across versions."""
    return seed * 1_000_003 + run


@dataclass
class RunResult:
    """What one run contributes to the batch report (small, so workers return it cheaply)."""

    run: int
    seed: int
    steps: int
    report: dict[str, Any]
    unavailability_s: dict[str, list[float]]
    fault_kinds: list[str]
    faults: list[Fault] = field(default_factory=list)


def schedule_for(config: SimConfig, seed: int) -> list[Fault]:
    return random_schedule(
        random.Random(seed),
        config.topology,
        duration_s=config.duration_s,
        min_faults=config.min_faults,
        quiet_tail_s=config.quiet_tail_s,
    )


def simulate(config: SimConfig, faults: Sequence[Fault], seed: int) -> Report:
    return Simulation(config, faults, seed).run()


def run_one(
    config: SimConfig, seed: int, run: int, faults: Sequence[Fault] | None = None
) -> RunResult:
    s = run_seed(seed, run)
    schedule = list(faults) if faults is not None else schedule_for(config, s)
    report = simulate(config, schedule, s)
    return RunResult(
        run=run,
        seed=s,
        steps=int(report.extra["steps"]),
        report=report.to_json(),
        unavailability_s=report.unavailability_s,
        fault_kinds=sorted({f.kind for f in schedule}),
        faults=schedule,
    )


def _run_chunk(args: tuple[SimConfig, int, Sequence[int]]) -> list[RunResult]:
    config, seed, runs = args
    return [run_one(config, seed, r) for r in runs]


def run_all(
    config: SimConfig, *, runs: int, seed: int, jobs: int, chunk: int = 5, first: int = 0
) -> Iterator[RunResult]:
    """Results of runs first..runs-1, in order; ``jobs`` > 1 uses worker processes."""
    chunks = [range(i, min(i + chunk, runs)) for i in range(first, runs, chunk)]
    if jobs <= 1:
        for c in chunks:
            yield from _run_chunk((config, seed, c))
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for results in pool.map(_run_chunk, [(config, seed, c) for c in chunks]):
            yield from results


def shrink_failure(config: SimConfig, result: RunResult) -> list[Fault]:
    """A smaller schedule that still breaks an invariant with the same run seed."""

    def still_fails(faults: list[Fault]) -> bool:
        return bool(simulate(config, faults, result.seed).violations)

    return shrink(result.faults, still_fails)


def aggregate(
    config: SimConfig,
    results: Sequence[RunResult],
    *,
    seed: int,
    shrink_failures: bool = True,
    on_shrink: Callable[[int], None] | None = None,
) -> Report:
    """The batch report: sums, per-kind unavailability over all faults, failing runs."""
    total = Report()
    kinds: Counter[str] = Counter()
    failing: list[dict[str, Any]] = []
    steps = 0
    worst: dict[str, dict[str, Any]] = {}
    by_invariant: Counter[str] = Counter()
    margins: list[float] = []
    for r in results:
        if r.report.get("min_fence_margin_s") is not None:
            margins.append(r.report["min_fence_margin_s"])
        by_invariant.update(r.report.get("violations_by_invariant", {}))
        data = r.report
        total.acked += data["acked"]
        total.acked_lost += data["acked_lost"]
        total.duplicates_applied += data["duplicates_applied"]
        total.stale_epoch_accepts += data["stale_epoch_accepts"]
        total.dual_owner_epochs += data["dual_owner_epochs"]
        total.max_unavailability_s = max(total.max_unavailability_s, data["max_unavailability_s"])
        merge_unavailability(total.unavailability_s, r.unavailability_s)
        for kind, values in r.unavailability_s.items():
            value = max(values, default=0.0)
            if value > worst.get(kind, {}).get("unavailability_s", -1.0):
                worst[kind] = {"run": r.run, "unavailability_s": round(value, 3)}
        kinds.update(r.fault_kinds)
        steps += r.steps
        total.shards_per_site = data["shards_per_site"]
        if data["violations"]:
            failing.append(
                {
                    "run": r.run,
                    "batch_seed": seed,
                    "seed": r.seed,
                    "violations": data["violations"][:5],
                    "schedule": [f.to_json() for f in r.faults],
                }
            )
    if shrink_failures:
        by_run = {r.run: r for r in results}
        for entry in failing[:MAX_SHRUNK_RUNS]:
            if on_shrink is not None:
                on_shrink(entry["run"])
            shrunk = shrink_failure(config, by_run[entry["run"]])
            entry["shrunk_schedule"] = [f.to_json() for f in shrunk]
    total.extra = {
        "runs": len(results),
        "steps": steps,
        "seed": seed,
        "simulated_s_per_run": config.duration_s,
        "fencing_enabled": config.fencing_enabled,
        "runs_per_fault_kind": dict(sorted(kinds.items())),
        "failing_runs": len(failing),
        "worst_run_per_fault_kind": dict(sorted(worst.items())),
        "failures": failing[:20],
        "timing": asdict(config.timing),
        "violations_by_invariant": dict(sorted(by_invariant.items())),
        "min_fence_margin_s": min(margins) if margins else None,
    }
    for entry in failing:
        for v in entry["violations"]:
            if len(total.violations) < MAX_REPORTED_VIOLATIONS:
                detail = f"run {entry['run']} (seed {entry['seed']}): {v['detail']}"
                total.violations.append(Violation(v["invariant"], v["at_s"], detail))
    return total


def load_schedule(text: str) -> list[Fault]:
    """A schedule from JSON: a list of faults, or a report's failure entry holding one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"the schedule is not valid JSON ({err})") from None
    if isinstance(data, dict):  # a 'failures' entry of a report: shrunk if it was, else whole
        data = data.get("shrunk_schedule", data.get("schedule"))
    if not isinstance(data, list):
        raise ValueError(
            "a schedule must be a JSON list of faults, or a 'failures' entry of a report"
        )
    return [Fault.from_json(item) for item in data]
