"""`bfm demo`: the three-site system on this machine, with a live status view."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from failover.cli.errors import CheckFailed, Unreachable, UsageError

if TYPE_CHECKING:
    from failover.chaos.demo import Demo

# The store URLs a demo's processes can share (memory:// lives in one process only).
STORE_URL_SCHEMES = ("sqlite://", "etcd://", "kubernetes://")


def default_run_dir() -> Path:
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "bfm" / time.strftime("demo-%Y%m%d-%H%M%S")


def demo(
    duration: Annotated[str, typer.Option(help="How long the traffic runs, e.g. 60s, 5m.")] = "60s",
    rate: Annotated[
        float, typer.Option(min=1, help="Messages per second from the producer.")
    ] = 200.0,
    scenario: Annotated[
        str,
        typer.Option(
            help="none, component-crash, component-pause, cpu-hog, site-crash, site-return,"
            " leader-crash, switchover, drain, rolling-update, bad-update, update-leader-crash,"
            " license-site-crash, license-dongles-removed, license-bad-files."
        ),
    ] = "none",
    shards: Annotated[int, typer.Option(min=2, help="Shards per component.")] = 16,
    headless: Annotated[bool, typer.Option(help="No live view: progress lines on stderr.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where the run's files go.")] = None,
    store: Annotated[
        str,
        typer.Option(
            help="sqlite (a file in the run directory), etcd (a 3-member cluster on "
            "127.0.0.1, started and stopped with the demo), or a sqlite://, etcd:// or "
            "kubernetes://namespace URL."
        ),
    ] = "sqlite",
    mix: Annotated[
        str,
        typer.Option(
            help="The producer's kinds of message: uniform (each a sixth) or field (mostly "
            "events and status, 2 % alarms)."
        ),
    ] = "uniform",
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            help="Send every process's spans over OTLP/HTTP to this collector (base URL, e.g. "
            "http://127.0.0.1:4318); default: $OTEL_EXPORTER_OTLP_ENDPOINT, else the run's "
            "log store (unless --no-logstore)."
        ),
    ] = None,
    settle: Annotated[
        str | None,
        typer.Option(
            help="End the traffic this long after the scenario's last step ran (e.g. 15s), "
            "instead of at --duration, which stays the ceiling.",
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls/--no-tls",
            help="Every backbone connection (producer, routers, modules, the sites' pings) "
            "over mutual TLS, with a development CA made in <run dir>/tls.",
        ),
    ] = False,
    logstore: Annotated[
        bool,
        typer.Option(
            "--logstore/--no-logstore",
            help="Run the embedded log and trace store and ship every process's logs and "
            "spans to it (bfm logs, bfm trace).",
        ),
    ] = True,
) -> None:
    """Start sites a, b and w, the backbone and a producer; show who owns what; judge the run.

    Exit 0 when the checker finds nothing lost, no stale write and no dual owner; 1 otherwise.
    """
    from failover.chaos.demo import SCENARIOS, Demo
    from failover.chaos.run_check import judge
    from failover.cli.durations import parse_duration_s
    from failover.core.topology import default_topology
    from failover.workload.producer import MIXES

    if mix not in MIXES:
        raise UsageError(f"--mix {mix!r} is not one of {', '.join(MIXES)}")
    if scenario not in SCENARIOS:
        raise UsageError(f"--scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    duration_s = parse_duration_s(duration)
    settle_s = None if settle is None else parse_duration_s(settle)
    telemetry_env = _telemetry_env(otlp_endpoint)  # bad input fails before any file exists
    directory = run_dir or default_run_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if store not in ("sqlite", "etcd") and not store.startswith(STORE_URL_SCHEMES):
        raise UsageError(
            f"--store {store!r}: give sqlite, etcd, or a sqlite://, etcd:// or kubernetes:// URL"
        )
    run = Demo(
        directory,
        default_topology(shards_per_component=shards),
        rate,
        duration_s,
        scenario,
        store=store,
        env=telemetry_env,
        mix=mix,
        logstore=logstore,
        settle_s=settle_s,
        tls=tls,
    )
    typer.echo(f"bfm demo: run directory {directory}", err=True)
    typer.echo(
        f"bfm demo: metrics targets in {directory / 'targets'} (Prometheus config: "
        f"{directory / 'prometheus.yml'}); JSON logs in {directory}/*.log",
        err=True,
    )
    summary: dict[str, Any] = {}
    try:
        _start(run)
        _wait_for_placement(run)
        run.start_traffic()
        if headless:
            _headless(run)
        else:
            _live(run)
    except KeyboardInterrupt:
        typer.echo("bfm demo: interrupted; stopping every process", err=True)
    finally:
        summary = run.stop()
    result = judge(directory, faults=run.faults, shards_per_site=run.shards_at_end)
    result.extra.update({"scenario": scenario, "rate_per_s": rate, "producer": summary})
    if run.license_watch is not None:
        result.extra["license"] = run.license_watch.report()
    if not_run := run.steps_not_run():
        result.extra["steps_not_run"] = not_run
    data = result.to_json()
    if report is not None:
        report.write_text(json.dumps(data, indent=2), encoding="utf-8")
    _print_summary(data)
    if result.violations:
        raise CheckFailed(f"the checker found violations; see {report or 'the report above'}")


def _start(run: Demo) -> None:
    """The run's processes, with a clear error when the store or log store cannot start."""
    from failover.adapters.etcd_cluster import EtcdClusterError
    from failover.chaos.logstore_process import LogStoreStartError

    try:
        run.start()
    except EtcdClusterError as err:
        raise Unreachable(f"cannot start the demo's etcd cluster: {err}") from None
    except LogStoreStartError as err:
        raise Unreachable(f"{err}; or run with --no-logstore") from None
    typer.echo(f"bfm demo: store {run.store_url}", err=True)
    if run.logstore_url:
        typer.echo(
            f"bfm demo: logs and traces at {run.logstore_url}; try: "
            f"BFM_LOKI_URL={run.logstore_url} bfm logs '{{site=\"a\"}}'",
            err=True,
        )


def _telemetry_env(otlp_endpoint: str | None) -> dict[str, str]:
    if otlp_endpoint is None:
        return {}
    if not otlp_endpoint.startswith(("http://", "https://")):
        raise UsageError(
            f"--otlp-endpoint {otlp_endpoint!r} is not an http(s) URL; give the collector's "
            "OTLP/HTTP base URL, e.g. http://127.0.0.1:4318"
        )
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint.rstrip("/")}


def _wait_for_placement(run: Demo, ceiling_s: float = 60.0) -> None:
    from failover.ports import StoreError
    from failover.runtime.documents import OWNERSHIP_PREFIX

    start = time.monotonic()
    while time.monotonic() - start < ceiling_s:
        try:
            placed = len(run.coordination().list(OWNERSHIP_PREFIX))
        except StoreError:
            placed = 0  # the store is still coming up
        if placed == len(run.topology.components):
            return
        time.sleep(0.2)
    raise CheckFailed(
        f"the sites did not place the work within {ceiling_s:.0f} s; see {run.run_dir}/*.log"
    )


def _headless(run: Demo) -> None:
    last = 0.0
    while not run.traffic_done():
        run.tick()
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            s = run.producer_stats()
            typer.echo(
                f"bfm demo: sent {s.get('sent', 0)} acked {s.get('acked', 0)} "
                f"p99 {s.get('recent_p99_s', 0)} s faults {len(run.faults)}",
                err=True,
            )
        time.sleep(0.1)


def _live(run: Demo) -> None:
    from rich.live import Live

    from failover.cli.demo_view import render

    with Live(render(run), refresh_per_second=2, screen=False) as live:
        while not run.traffic_done():
            run.tick()
            live.update(render(run))
            time.sleep(0.25)
    typer.echo("")  # the summary starts on a line of its own


def _print_summary(data: dict[str, Any]) -> None:
    keys = (
        "acked",
        "acked_lost",
        "stale_epoch_accepts",
        "dual_owner_epochs",
        "max_unavailability_s",
    )
    typer.echo("bfm demo: " + "  ".join(f"{k}={data[k]}" for k in keys))
    for kind, s in data["unavailability_s"].items():
        typer.echo(f"  {kind}: unavailable {s['max']:.3f} s (n={s['n']})")
    shards = data.get("shards_per_site") or {}
    if shards:
        typer.echo(
            "  shards at the end: "
            + ", ".join(
                f"{c} " + " ".join(f"{s}={n}" for s, n in sorted(per.items()))
                for c, per in sorted(shards.items())
            )
        )
    for step in data.get("steps_not_run", []):
        typer.echo(
            f"  NOT RUN: {step['kind']} {step['target']} {step['action']} "
            f"(due at {step['at_s']} s): waiting for {step['waiting_for'] or 'its turn'}"
        )
    for v in data["violations"]:
        typer.echo(f"  VIOLATION {v['invariant']}: {v['detail']}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
