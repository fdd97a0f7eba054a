"""`bfm chaos`: BFM on three network-namespace sites under load, with real partitions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from failover.cli.errors import (
    EXIT_UNREACHABLE,
    CheckFailed,
    CliError,
    Unreachable,
    UsageError,
)


class NoNamespaces(CliError):
    """This machine (or user) cannot make network namespaces (exit 3, as unreachable)."""

    exit_code = EXIT_UNREACHABLE


def chaos(
    scenario: Annotated[
        str | None,
        typer.Option(
            help="isolate-a, isolate-b, isolate-w, cut-a-b, oneway-a-to-b, pause-leader, "
            "pause-owner-a, kill-store-w, flap-a, crash-owner-a, crash-site-a."
        ),
    ] = None,
    random_faults: Annotated[
        bool,
        typer.Option("--random", help="A random sequence of faults from --seed, one at a time."),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the random faults.")] = None,
    duration: Annotated[str, typer.Option(help="How long the traffic runs, e.g. 30s, 5m.")] = "30s",
    rate: Annotated[float, typer.Option(min=1, help="Messages per second.")] = 500.0,
    shards: Annotated[int, typer.Option(min=2, help="Shards per component.")] = 8,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where the run's files go.")] = None,
) -> None:
    """Run the three sites in network namespaces (etcd member, agent, controller replica and
    backbone per site; the producer in a client namespace), inject the faults under load,
    and judge the history. Root only. Exit 0 when nothing acknowledged was lost, no stale
    owner's write was accepted and no epoch had two owners; 1 otherwise.
    """
    from failover.chaos import netns
    from failover.chaos.chaos_run import SCENARIOS, ChaosRun
    from failover.cli.demo import default_run_dir
    from failover.cli.durations import parse_duration_s
    from failover.core.topology import default_topology

    if random_faults == (scenario is not None):
        raise UsageError("give either --scenario ID or --random --seed N")
    if random_faults and seed is None:
        raise UsageError("--random needs --seed N (the same seed gives the same faults)")
    if scenario is not None and scenario not in SCENARIOS:
        raise UsageError(f"--scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    duration_s = parse_duration_s(duration)
    if duration_s < 15:
        raise UsageError(f"--duration {duration} is too short: give at least 15s")
    reason = netns.available()
    if reason is not None:
        raise NoNamespaces(f"bfm chaos needs network namespaces: {reason}")
    directory = run_dir or default_run_dir().with_name(time.strftime("chaos-%Y%m%d-%H%M%S"))
    run = ChaosRun(
        directory,
        default_topology(shards_per_component=shards),
        duration_s,
        rate,
        scenario=scenario,
        seed=seed if random_faults else None,
        progress=lambda line: typer.echo(f"bfm chaos: {line}", err=True),
    )
    typer.echo(f"bfm chaos: run directory {directory}", err=True)
    try:
        result = run.run()
    except KeyboardInterrupt:
        raise CheckFailed("interrupted; every process and namespace was removed") from None
    except RuntimeError as err:  # the etcd cluster or the sites did not come up
        raise Unreachable(str(err)) from None
    data = result.to_json()
    if report is not None:
        report.write_text(json.dumps(data, indent=2), encoding="utf-8")
    typer.echo(json.dumps(data, indent=2))
    _print_summary(data)
    if result.violations:
        raise CheckFailed(f"the checker found violations; see {report or 'the report above'}")


def _print_summary(data: dict[str, Any]) -> None:
    keys = ("acked", "acked_lost", "stale_epoch_accepts", "dual_owner_epochs")
    typer.echo("bfm chaos: " + "  ".join(f"{k}={data[k]}" for k in keys), err=True)
    start = data["faults"][0]["at_s"] if data["faults"] else 0.0
    for fault in data["faults"]:
        typer.echo(
            f"  +{fault['at_s'] - start:6.1f} s  {fault['action']:<6} {fault['kind']} "
            f"{fault['target']}",
            err=True,
        )
    for kind, s in data["unavailability_s"].items():
        typer.echo(
            f"  {kind}: longest wait p50 {s['p50']} s, max {s['max']} s (n={s['n']})", err=True
        )
    for v in data["violations"]:
        typer.echo(f"  VIOLATION {v['invariant']}: {v['detail']}", err=True)


def register(app: typer.Typer) -> None:
    app.command("chaos")(chaos)
