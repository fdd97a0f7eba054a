"""`bfm component run` and `bfm produce`: the reference backbone's processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from failover.cli.errors import UsageError
from failover.core.versions import DEFAULT_VERSION, check_version

ROUTING_REFRESH_S = 0.5

if TYPE_CHECKING:
    from failover.workload.endpoints import Endpoints
    from failover.workload.producer import Producer, ProducerStats

component_app = typer.Typer(help="Run one component process of a site.", no_args_is_help=True)


def _endpoints(run_dir: str) -> Endpoints:
    from failover.workload.endpoints import Endpoints

    try:
        return Endpoints.load(Path(run_dir))
    except ValueError as err:
        raise UsageError(str(err)) from None


@component_app.command("run")
def component_run(
    site: Annotated[str, typer.Option(help="The worker site: a or b.")],
    component: Annotated[
        str, typer.Option(help="backbone (router + module), eep, eap, aam, msm or gsm.")
    ],
    run_dir: Annotated[
        str, typer.Option(help="The run directory (endpoints.json, grants, ledgers).")
    ],
    version: Annotated[
        str,
        typer.Option(
            help="The version this instance runs, reported with its health on the site's "
            "liveness ping (build metadata +fail-after-ready: a test version that refuses "
            "every message once it is ready)."
        ),
    ] = DEFAULT_VERSION,
    grants_url: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_GRANTS_URL",
            help="Read the site's grants from its site process over HTTP "
            "(http://HOST:PORT/grants, `bfm site run --grants-listen`) instead of the run "
            "directory's grants file: for pods, which share no files or clock with it.",
        ),
    ] = None,
    bind_host: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_BIND_HOST",
            help="Listen on this host (e.g. 0.0.0.0 in a pod) instead of the one "
            "endpoints.json names, which stays the address others connect to.",
        ),
    ] = None,
) -> None:
    """Run one module (and, for backbone, the site's router) until SIGTERM/SIGINT."""
    from failover.adapters.store_url import open_store
    from failover.cli.simulate import fencing_disabled, warn_fencing_off
    from failover.runtime.listening import ListenError
    from failover.telemetry import metrics_listen_from_env
    from failover.workload import component_process

    try:
        check_version(version)
    except ValueError as err:
        raise UsageError(f"--version: {err}") from None
    if grants_url is not None:
        _check_grants_url(grants_url)
    try:
        metrics_listen = metrics_listen_from_env(os.environ)
    except ValueError as err:
        raise UsageError(str(err)) from None
    endpoints = _endpoints(run_dir)
    site = site.lower()
    mine = endpoints.sites.get(site)
    if mine is None or component not in mine.modules:
        known = sorted(mine.modules) if mine else []
        raise UsageError(
            f"no component {component!r} at site {site!r} in {run_dir}; known: {known}"
        )
    if fencing_disabled():
        warn_fencing_off()
    store = open_store(endpoints.store)
    try:
        component_process.run(
            site,
            component,
            run_dir=Path(run_dir),
            store=store,
            fencing_enabled=not fencing_disabled(),
            version=version,
            grants_url=grants_url,
            bind_host=bind_host or None,
            metrics_listen=metrics_listen,
        )
    except ListenError as err:
        raise UsageError(str(err)) from None
    finally:
        store.close()


def _check_grants_url(url: str) -> None:
    """A usage error for a grants URL that is malformed or not of the backbone's scheme
    (https where BFM_TLS_* is set, else http)."""
    from failover.adapters.tls import TlsConfigError, tls_from_env
    from failover.runtime.grants_http import grants_url_problem

    if not _is_http_url(url):
        raise UsageError(
            f"--grants-url {url!r} is not an http:// (or, with TLS, https://) URL; "
            "give the site process's, e.g. http://bfm-site-a:9465/grants"
        )
    try:
        tls = tls_from_env(os.environ)
    except TlsConfigError as err:
        raise UsageError(str(err)) from None
    problem = grants_url_problem(url, tls=tls is not None)
    if problem:
        raise UsageError(f"--grants-url: {problem}")


def _is_http_url(text: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        return False


def produce(
    run_dir: Annotated[str, typer.Option(help="The run directory (endpoints.json).")],
    rate: Annotated[
        float, typer.Option(min=0, help="Messages per second (0: only --burst).")
    ] = 200.0,
    duration: Annotated[str, typer.Option(help="How long to send, e.g. 20s.")] = "20s",
    burst: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also send this many messages at once at the start (devices back online "
            "with their queued events), as --max-in-flight allows.",
        ),
    ] = 0,
    max_in_flight: Annotated[
        int,
        typer.Option(min=1, help="At most this many messages sent and not yet acknowledged."),
    ] = 4000,
    mix: Annotated[
        str,
        typer.Option(
            help="Kinds of message: uniform (each a sixth) or field (mostly events and "
            "status, 2 % alarms)."
        ),
    ] = "uniform",
    site: Annotated[
        str,
        typer.Option(help="Send to this site's router first; the producer's site in telemetry."),
    ] = "a",
    stay_local: Annotated[
        bool,
        typer.Option(
            help="Send every new message to --site's router while it takes traffic (a "
            "site's own devices), not to the router that answered last."
        ),
    ] = False,
    history: Annotated[str | None, typer.Option(help="History file (JSON lines).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of message ids and keys.")] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the producer's stats as JSON.")
    ] = False,
    stats_file: Annotated[
        str | None, typer.Option(help="Write the stats as JSON here every second (for views).")
    ] = None,
) -> None:
    """Send a steady stream of messages, each retried until acknowledged; record the history."""
    from failover.adapters.tls import TlsConfigError, tls_from_env
    from failover.cli.durations import parse_duration_s
    from failover.workload.component_process import start_telemetry, stop_telemetry
    from failover.workload.producer import MIXES, Producer

    if mix not in MIXES:
        raise UsageError(f"--mix {mix!r} is not one of {', '.join(MIXES)}")
    if rate <= 0 and burst <= 0:
        raise UsageError("--rate 0 sends nothing; give a --rate above 0 or a --burst")
    endpoints = _endpoints(run_dir)
    site = site.lower()
    duration_s = parse_duration_s(duration)
    try:
        tls = tls_from_env(os.environ)  # BFM_TLS_*: TLS to the routers (SECURITY.md)
    except TlsConfigError as err:
        raise UsageError(str(err)) from None
    entries = [
        (s, e.router)
        for s, e in sorted(endpoints.sites.items(), key=lambda i: i[0] != site)
        if e.router
    ]
    routers = [router for _, router in entries]
    path = Path(history) if history else Path(run_dir) / f"history-{seed}.jsonl"
    # several producers of one run (seeds) each announce their own metrics address
    instance = "" if seed == 1 else str(seed)
    telemetry = start_telemetry("producer", site, Path(run_dir), instance=instance)
    try:
        with path.open("a", encoding="utf-8") as out:
            producer = Producer(
                routers,
                rate_per_s=rate,
                shard_count=endpoints.shards_per_component,
                history=out,
                wall=time.time,
                seed=seed,
                serving=_RoutingView(Path(run_dir), [s for s, _ in entries]),
                stay_first=stay_local,
                mix=mix,
                site=site,
                burst=burst,
                max_in_flight=max_in_flight,
                tls=tls.client_context() if tls else None,
            )
            stats = asyncio.run(
                _run_with_stats(producer, duration_s, Path(stats_file) if stats_file else None)
            )
    finally:
        stop_telemetry(telemetry)
    summary = {
        "sent": stats.sent,
        "acked": stats.acked,
        "retries": stats.retries,
        "refused": stats.refused,
        "given_up": stats.given_up,
        "max_wait_s": round(stats.max_wait_s, 3),
        "history": str(path),
    }
    typer.echo(json.dumps(summary) if as_json else " ".join(f"{k}={v}" for k, v in summary.items()))


class _RoutingView:
    """Whether each site's entry point takes traffic (the platform's routing files),
    re-read at most every ``ROUTING_REFRESH_S``."""

    def __init__(self, run_dir: Path, sites: list[str]) -> None:
        self.run_dir, self.sites = run_dir, sites
        self._read_at_s = float("-inf")
        self._flags = [True] * len(sites)

    def __call__(self) -> list[bool]:
        from failover.adapters.local_platform import read_routing

        now_s = time.monotonic()
        if now_s - self._read_at_s >= ROUTING_REFRESH_S:
            self._read_at_s = now_s
            flags = []
            for site in self.sites:
                try:
                    flags.append(read_routing(self.run_dir, site))
                except ValueError:
                    flags.append(True)  # unreadable: do not lose a router over it
            self._flags = flags
        return self._flags


async def _run_with_stats(
    producer: Producer, duration_s: float, stats_file: Path | None
) -> ProducerStats:
    from failover.adapters.files import write_text_atomically

    async def publish() -> None:
        while True:
            await asyncio.sleep(1.0)
            if stats_file is not None:
                snapshot = {"t": time.time(), **producer.stats.snapshot()}
                write_text_atomically(stats_file, json.dumps(snapshot))

    task = asyncio.create_task(publish())
    # SIGTERM ends the traffic early but cleanly: nothing new is sent, what is in flight is
    # still waited for, and the history and stats are complete.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, producer.finish)
    try:
        return await producer.run(duration_s=duration_s)
    finally:
        task.cancel()


def register(app: typer.Typer) -> None:
    app.add_typer(component_app, name="component")
    app.command("produce")(produce)
