"""`bfm site run`: run one site's BFM process (agent, controller, heartbeats) until stopped."""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from failover.cli.durations import parse_duration_s
from failover.cli.errors import UsageError

site_app = typer.Typer(help="Run and inspect one site's BFM process.", no_args_is_help=True)


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not (colon and host and port.isdigit() and 0 <= int(port) < 65536):
        raise UsageError(f"--listen {text!r} is not HOST:PORT, e.g. 127.0.0.1:7001")
    return host, int(port)


@site_app.command("run")
def run(
    site: Annotated[str, typer.Option(help="This site: a, b or w.")],
    store: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_STORE",
            help="Coordination store URL: sqlite:///path/bfm.db, etcd://host:port,... "
            "or kubernetes://namespace[?context=NAME].",
        ),
    ] = None,
    run_dir: Annotated[
        str | None,
        typer.Option(help="A run directory with endpoints.json: store, addresses and grants."),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="HOST:PORT for direct heartbeats (UDP).")
    ] = "127.0.0.1:0",
    peer: Annotated[
        list[str] | None, typer.Option(help="Another site's heartbeat address, SITE=HOST:PORT.")
    ] = None,
    shards: Annotated[int, typer.Option(min=1, help="Shards per component.")] = 16,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (e.g. 30s); default: until signalled.")
    ] = None,
    status_file: Annotated[
        str | None, typer.Option(help="Write this site's status as JSON here every second.")
    ] = None,
    grants_file: Annotated[
        str | None,
        typer.Option(help="Publish what this site may serve here, for its router and modules."),
    ] = None,
    grants_listen: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_GRANTS_LISTEN",
            help="Also serve what this site may serve over HTTP on HOST:PORT (GET /grants), "
            "for components that share no files or clock with this process (pods: "
            "`bfm component run --grants-url`).",
        ),
    ] = None,
    license_dir: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_LICENSE_DIR",
            help="License directory (license.json, the public key, <site>.license); "
            "default: <run dir>/license when it exists, else licensing is off.",
        ),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option(
            envvar="BFM_PLATFORM",
            help="Run the components as pods: kubernetes://NAMESPACE[?context=NAME]"
            "[&image=REPOSITORY][&name=NAME] (docs/kubernetes.md); the leader also "
            "isolates a dead site's nodes. Default: local processes (with --run-dir).",
        ),
    ] = None,
) -> None:
    """Run one site until SIGTERM/SIGINT (or --duration); logs JSON lines on stderr."""
    from failover.adapters.store_url import StoreUrlError, open_store
    from failover.cli import logging_setup
    from failover.cli.simulate import fencing_disabled, warn_fencing_off
    from failover.core.quorum import LeaseTiming
    from failover.core.topology import default_topology
    from failover.runtime.audit_log import locate_audit_log
    from failover.runtime.site_process import SiteSettings
    from failover.telemetry import configure_process, shutdown_process

    site = site.lower()
    _check_platform(platform)
    grants_bind = _grants_listen(grants_listen)
    probes = None
    components_dir = None  # a worker site of a run directory runs its own components
    if run_dir is not None:
        store, shards, listen, peer, grants_file, probes = _from_run_dir(
            Path(run_dir), site, store, grants_file
        )
    if not store:
        raise UsageError("no store given: pass --store URL, --run-dir DIR or set BFM_STORE")
    topology = default_topology(shards_per_component=shards)
    if site not in topology.site_names:
        raise UsageError(f"--site {site!r} is not one of {', '.join(topology.site_names)}")
    if run_dir is not None and topology.is_worker(site):
        components_dir = Path(run_dir)
    peers = _peers(peer)
    stop_after_s = parse_duration_s(duration) if duration else None
    try:
        # A store call outliving half the renew deadline is given up, so one member that
        # stopped answering (cut off, paused) never holds a renewal past the deadline.
        coordination = open_store(store, request_timeout_s=LeaseTiming().renew_deadline_s / 2)
    except StoreUrlError as err:
        raise UsageError(str(err).removeprefix("bfm: ")) from None
    if not configure_process(
        "bfm-site",
        site,
        Path(run_dir) if run_dir is not None else None,
        metrics_listen=_metrics_listen(os.environ),
    ):
        logging_setup.configure()  # telemetry off (BFM_TELEMETRY=off): JSON logs all the same
    if fencing_disabled():
        warn_fencing_off()
    licensing = _licensing(site, license_dir, run_dir)
    audit_log = locate_audit_log(
        run_dir=Path(run_dir) if run_dir else None, store_url=store, environ=os.environ
    )
    if audit_log is None:
        _warn_not_audited(store)
    settings = SiteSettings(
        site=site,
        audit_log=audit_log,
        heartbeat_key=_heartbeat_key(),
        license=licensing[0] if licensing else None,
        topology=topology,
        listen=_host_port(listen),
        peers=peers,
        fencing_enabled=not fencing_disabled(),
        grants_file=Path(grants_file) if grants_file else None,
        grants_listen=grants_bind,
        grants_tls=_tls_server() if grants_bind else None,
    )
    try:
        items_file = Path(run_dir) / f"site-items-{site}.json" if run_dir is not None else None
        exit_code = _run_until_stopped(
            settings,
            coordination,
            probes,
            stop_after_s,
            status_file,
            components_dir,
            items_file,
            licensing[1] if licensing else None,
            platform,
        )
    finally:
        coordination.close()
        shutdown_process()
    if exit_code:
        raise typer.Exit(exit_code)  # EXIT_REBOOT: start this site again (an OS update)


def _licensing(site: str, license_dir: str | None, run_dir: str | None) -> tuple[Any, Any] | None:
    """The license policy and this site's dongle, from ``--license-dir`` (or the run
    directory's ``license/``); None when licensing is not configured."""
    from failover.adapters.license_config import CONFIG_FILE, LicenseConfig, LicenseConfigError
    from failover.adapters.license_dongle import LicenseFileDongle
    from failover.runtime.license_keeper import LicensePolicy

    if license_dir is None:
        default = Path(run_dir) / "license" if run_dir is not None else None
        if default is None or not (default / CONFIG_FILE).exists():
            return None
        license_dir = str(default)
    try:
        config = LicenseConfig.load(Path(license_dir))
        public_key = config.public_key()
    except LicenseConfigError as err:
        raise UsageError(f"--license-dir: {err}") from None
    dongle = LicenseFileDongle(
        config.license_file(site), public_key, site=site, system_id=config.system_id
    )
    return LicensePolicy(config.system_id, config.grace_s), dongle


def _from_run_dir(
    run_dir: Path, site: str, store: str | None, grants_file: str | None
) -> tuple[str, int, str, list[str], str, Any]:
    """Store, shards, heartbeat address, peers, grants file and probes from endpoints.json."""
    from failover.runtime.probes import ComponentProbes
    from failover.workload.endpoints import Endpoints

    try:
        endpoints = Endpoints.load(run_dir)
    except ValueError as err:
        raise UsageError(str(err)) from None
    mine = endpoints.sites.get(site)
    if mine is None:
        raise UsageError(f"--site {site!r} is not in {run_dir}/endpoints.json")
    peers = [
        f"{s}={e.heartbeat[0]}:{e.heartbeat[1]}" for s, e in endpoints.sites.items() if s != site
    ]
    return (
        store or endpoints.store,
        endpoints.shards_per_component,
        f"{mine.heartbeat[0]}:{mine.heartbeat[1]}",
        peers,
        grants_file or str(run_dir / f"grants-{site}.json"),
        ComponentProbes(mine.modules, tls=_tls_client()) if mine.modules else None,
    )


def _heartbeat_key() -> bytes | None:
    """The sites' shared heartbeat secret (``BFM_HEARTBEAT_KEY_FILE``; SECURITY.md)."""
    from failover.runtime.heartbeats import heartbeat_key

    try:
        return heartbeat_key(os.environ)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _tls_client() -> Any:
    """The client side of the components' TLS, when ``BFM_TLS_*`` name certificates."""
    tls = _tls_files()
    return tls.client_context() if tls else None


def _tls_server() -> Any:
    """The grants server's side of the TLS, when ``BFM_TLS_*`` name certificates."""
    tls = _tls_files()
    return tls.server_context() if tls else None


def _tls_files() -> Any:
    from failover.adapters.tls import TlsConfigError, tls_from_env

    try:
        return tls_from_env(os.environ)
    except TlsConfigError as err:
        raise UsageError(str(err)) from None


def _run_until_stopped(
    settings: Any,
    store: Any,
    probes: Any,
    stop_after_s: float | None,
    status_file: str | None,
    components_dir: Path | None,
    items_file: Path | None = None,
    dongle: Any = None,
    platform_url: str | None = None,
) -> int:
    """Run the site; with ``components_dir`` it also starts and supervises its components,
    at the versions the rolling update wants (``update/desired/<site>``), as local
    processes, or as pods with a Kubernetes ``platform_url`` (whose leader also isolates
    dead sites' nodes). The exit code: 0, or ``EXIT_REBOOT`` after an OS update."""
    from failover.adapters.local_platform import LocalPlatform
    from failover.adapters.system_clock import SystemClock
    from failover.runtime.instrumented_store import InstrumentedStore
    from failover.runtime.listening import ListenError
    from failover.runtime.site_process import SiteProcess
    from failover.runtime.supervisor import Supervisor

    clock = SystemClock()
    # One store, measured per user: the agent (and supervisor), the controller replica.
    agent_store = InstrumentedStore(store, site=settings.site, component="agent")
    controller_store = InstrumentedStore(store, site=settings.site, component="controller")
    supervisor = None
    isolation = None
    if platform_url is not None:
        pods = _kubernetes_platform(platform_url, settings, store, components_dir, clock)
        isolation = pods
        if settings.topology.is_worker(settings.site):
            supervisor = Supervisor(pods, settings.site, clock=clock, store=agent_store)
    elif components_dir is not None:
        platform = LocalPlatform(
            components_dir,
            settings.topology,
            sites=(settings.site,),
            versions=_desired_versions(store, settings.site),
        )
        supervisor = Supervisor(platform, settings.site, clock=clock, store=agent_store)
    try:
        process = SiteProcess(
            settings,
            store=agent_store,
            controller_store=controller_store,
            clock=clock,
            probe=probes.alive if probes is not None else (lambda component: True),
            exited=probes.exited if probes is not None else None,
            supervisor=supervisor,
            health=probes.health if probes is not None else (lambda component: None),
            items_file=items_file,
            dongle=dongle,
            isolation=isolation,
        )
    except ListenError as err:
        raise UsageError(str(err)) from None
    if probes is not None:
        probes.start()
    if isolation is not None:
        isolation.heartbeats = process.heard  # the platform's site facts hear them too
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: process.request_stop())
    process.start()
    waited_s = 0.0
    try:
        while not process.wait(1.0):
            waited_s += 1.0
            if status_file:
                _write_status(status_file, process.status())
            if stop_after_s is not None and waited_s >= stop_after_s:
                break
    finally:
        process.stop()
        if probes is not None:
            probes.stop()
    return process.exit_code


def _metrics_listen(environ: Mapping[str, str]) -> tuple[str, int]:
    from failover.telemetry import metrics_listen_from_env

    try:
        return metrics_listen_from_env(environ)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _peers(texts: list[str] | None) -> dict[str, Any]:
    """The ``--peer SITE=HOST:PORT`` options by site (a usage error when malformed)."""
    from failover.runtime.heartbeats import parse_peer

    try:
        return {p.site: p for p in (parse_peer(text) for text in texts or [])}
    except ValueError as err:
        raise UsageError(str(err)) from None


def _warn_not_audited(store: str) -> None:
    from failover.runtime.audit_log import AUDIT_LOG_ENV

    logging.getLogger("bfm.audit").warning(
        f"controller decisions are not audited: no audit log for the store {store} "
        f"(pass --run-dir DIR or set {AUDIT_LOG_ENV}=PATH)"
    )


def _grants_listen(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    try:
        return _host_port(text)
    except UsageError:
        raise UsageError(f"--grants-listen {text!r} is not HOST:PORT, e.g. 0.0.0.0:9465") from None


def _check_platform(url: str | None) -> None:
    """A usage error (exit 2) for a malformed ``--platform``, before anything starts."""
    from failover.adapters.platform_url import check_platform_url
    from failover.adapters.store_url import StoreUrlError

    if url is None:
        return
    try:
        check_platform_url(url)
    except StoreUrlError as err:
        raise UsageError(f"--platform: {str(err).removeprefix('bfm: ')}") from None


def _kubernetes_platform(
    url: str, settings: Any, store: Any, components_dir: Path | None, clock: Any
) -> Any:
    """The Kubernetes platform of ``--platform``: a worker site's components as pods (given
    the run directory, when there is one), a witness's only for isolating nodes."""
    from failover.adapters.platform_url import open_platform
    from failover.adapters.store_url import StoreUrlError

    worker = settings.topology.is_worker(settings.site)
    try:
        return open_platform(
            url,
            settings.topology,
            sites=(settings.site,) if worker else (),
            clock=clock,
            extra_args=(f"--run-dir={components_dir}",) if components_dir else (),
            versions=_desired_versions(store, settings.site) if worker else None,
        )
    except StoreUrlError as err:
        raise UsageError(f"--platform: {str(err).removeprefix('bfm: ')}") from None


def _desired_versions(store: Any, site: str) -> dict[str, str]:
    """The component versions the rolling update wants at this site (none: the defaults)."""
    from failover.ports import StoreError
    from failover.runtime.version_docs import read_desired

    try:
        desired = read_desired(store, site)
    except (StoreError, ValueError) as err:
        logging.getLogger("bfm.site").warning(
            f"cannot read the desired versions of site {site} ({err}); starting the defaults"
        )
        return {}
    return dict(desired.components) if desired is not None else {}


def _write_status(path: str, status: dict[str, object]) -> None:
    from failover.adapters.files import write_text_atomically

    write_text_atomically(Path(path), json.dumps(status))


def register(app: typer.Typer) -> None:
    app.add_typer(site_app, name="site")
