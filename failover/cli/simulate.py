"""`bfm simulate`: the real core of three sites against a simulated network, store and clock."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.durations import parse_duration_s
from failover.cli.errors import CheckFailed, UsageError

if TYPE_CHECKING:
    from failover.chaos.report import Report
    from failover.chaos.sim_world import SimConfig

DISABLE_FENCING_ENV = "BFM_TEST_DISABLE_FENCING"


def fencing_disabled() -> bool:
    return os.environ.get(DISABLE_FENCING_ENV, "") not in ("", "0")


def warn_fencing_off() -> None:
    typer.echo(
        f"bfm: WARNING: {DISABLE_FENCING_ENV}=1: self-fencing and the sink's epoch check are "
        "OFF. This build is deliberately broken, to prove the checkers catch it; never run "
        "it in production.",
        err=True,
    )


def simulate(
    runs: Annotated[
        int, typer.Option(min=1, help="Number of runs, each with its own faults.")
    ] = 100,
    seed: Annotated[
        int, typer.Option(help="Seed of the batch; run i uses a seed derived from it.")
    ] = 1,
    duration: Annotated[
        str, typer.Option(help="Simulated length of each run (at least 10m), e.g. 10m, 900s.")
    ] = "10m",
    min_faults: Annotated[int, typer.Option(min=5, help="Faults per run, at least.")] = 5,
    shards: Annotated[int, typer.Option(min=1, help="Shards per component.")] = 16,
    jobs: Annotated[int, typer.Option(min=0, help="Worker processes (0: one per CPU).")] = 0,
    only_run: Annotated[
        int | None, typer.Option(help="Run only this run index of the batch (to reproduce it).")
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Replay a fault schedule (JSON list, or a 'failures' entry of a report)."
        ),
    ] = None,
    shrink: Annotated[bool, typer.Option(help="Shrink the schedules of failing runs.")] = True,
    from_run: Annotated[
        int, typer.Option(min=0, help="Start at this run index of the batch (resume a batch).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Simulate three sites under random faults and check every invariant at every step.

    Exit 0 when no invariant broke, 1 when one did (the report names the run, its seed and
    a shrunk schedule that reproduces it).
    """
    from failover.chaos.sim_world import SimConfig
    from failover.core.topology import default_topology

    duration_s = parse_duration_s(duration)
    if duration_s < 600:
        raise UsageError(f"--duration {duration} is shorter than the 10 minutes a run must last")
    off = fencing_disabled()
    if off:
        warn_fencing_off()
    config = SimConfig(
        topology=default_topology(shards_per_component=shards),
        duration_s=duration_s,
        min_faults=min_faults,
        fencing_enabled=not off,
    )
    if replay is not None or only_run is not None:
        report = _single(config, seed=seed, run=only_run, replay=replay)
    else:
        report = _batch(
            config,
            runs=runs,
            seed=seed,
            jobs=jobs or (os.cpu_count() or 1),
            shrink=shrink,
            first=from_run,
        )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_human(report.to_json())
    if report.violations:
        raise CheckFailed(
            f"{report.extra.get('failing_runs', 1)} run(s) broke an invariant; "
            "see the report's 'failures' for seeds and shrunk schedules."
        )


def _single(config: SimConfig, *, seed: int, run: int | None, replay: Path | None) -> Report:
    """One run of the batch (``--only-run``), or a replayed schedule with that run's seed."""
    from failover.chaos import sim_runs
    from failover.chaos.report import FaultEvent

    faults = None
    if replay is not None:
        try:
            text = replay.read_text(encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot read the schedule {replay} ({err.strerror})") from None
        try:
            faults = sim_runs.load_schedule(text)
            entry: Any = json.loads(text)
        except ValueError as err:
            raise UsageError(f"{replay}: {err}") from None
        if isinstance(entry, dict):  # a 'failures' entry names its batch seed and run
            seed = int(entry.get("batch_seed", seed))
            run = int(entry.get("run", 0)) if run is None else run
    try:
        result = sim_runs.run_one(config, seed, run or 0, faults)
    except ValueError as err:
        raise UsageError(f"{replay}: {err}") from None
    report = sim_runs.aggregate(config, [result], seed=seed, shrink_failures=False)
    report.faults = [FaultEvent(**f) for f in result.report["faults"]]
    return report


def _batch(
    config: SimConfig, *, runs: int, seed: int, jobs: int, shrink: bool, first: int = 0
) -> Report:
    from rich.console import Console
    from rich.progress import Progress

    from failover.chaos import sim_runs

    console = Console(stderr=True)
    results = []
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("simulating", total=runs - first)
        for result in sim_runs.run_all(config, runs=runs, seed=seed, jobs=jobs, first=first):
            results.append(result)
            progress.advance(task)
            if result.report["violations"]:
                console.print(
                    f"[red]run {result.run} (seed {result.seed}) broke an invariant[/red]"
                )

    def on_shrink(run: int) -> None:
        console.print(f"shrinking the schedule of failing run {run} ...")

    return sim_runs.aggregate(
        config, results, seed=seed, shrink_failures=shrink, on_shrink=on_shrink
    )


def _print_human(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    length_s = data["simulated_s_per_run"]
    title = f"bfm simulate: {data['runs']} run(s) of {length_s:.0f} s, seed {data['seed']}"
    table = Table(title=title)
    for column in ("fault kind", "runs", "faults", "p50 s", "p99 s", "max s"):
        table.add_column(column, justify="left" if column == "fault kind" else "right")
    runs_per_kind = data.get("runs_per_fault_kind", {})
    for kind, s in data["unavailability_s"].items():
        table.add_row(
            kind,
            str(runs_per_kind.get(kind, "")),
            str(s["n"]),
            f"{s['p50']:.3f}",
            f"{s['p99']:.3f}",
            f"{s['max']:.3f}",
        )
    console.print(table)
    console.print(
        "seconds until work flowed again, per fault (single faults; overlaps are 'double_fault')"
    )
    for key in (
        "acked",
        "acked_lost",
        "duplicates_applied",
        "stale_epoch_accepts",
        "dual_owner_epochs",
    ):
        console.print(f"{key}: {data[key]}")
    console.print(f"max_unavailability_s: {data['max_unavailability_s']}  steps: {data['steps']}")
    if not data["violations"]:
        console.print("[green]no invariant broken[/green]")
        return
    console.print(f"[red]violations by invariant: {data['violations_by_invariant']}[/red]")
    for entry in data["failures"][:5]:
        first = entry["violations"][0]
        console.print(
            f"run {entry['run']} (seed {entry['seed']}): [red]{first['invariant']}[/red] at "
            f"{first['at_s']} s: {first['detail']}"
        )
        console.print(
            f"  reproduce: bfm simulate --seed {entry['batch_seed']} --only-run {entry['run']}"
        )
        if "shrunk_schedule" in entry:
            console.print(f"  shrunk schedule: {json.dumps(entry['shrunk_schedule'])}")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
