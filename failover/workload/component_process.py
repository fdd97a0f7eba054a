"""One component process of a worker site: a module service, and for ``backbone`` also the
site's router. It reads its site's grants (the gate), learns newer epochs from the store,
and records into its own ledger in the run directory.

Telemetry (``bfm_observe.configure`` for the process, ``component`` = the module's name;
the router's metrics say ``component="router"``): when a component's ownership document
names a new controller decision (its trace id changed), the router of a backbone process
records a short ``bfm.reroute`` span in that decision's trace and logs it (logger
``bfm.router``), and each module logs once that it applies the decision of its own
component (logger ``bfm.module``); both lines carry the decision's trace id.

The process runs one ``version`` (``bfm component run --version``): its module and router
report it, and the module answers the site agent's ping with the health of the whole
process (its counters and the router's, summed: ``ModuleService.health_parts``).
``SIGUSR1`` starts a CPU hog in the process and ``SIGUSR2`` stops it (``CpuHog``: a test
fault of the reference components)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from opentelemetry.trace import SpanKind, Tracer

from bfm_observe.propagation import context_of
from failover import telemetry
from failover.adapters.tls import tls_from_env
from failover.core.fencing import EpochFence, Ownership
from failover.core.versions import DEFAULT_VERSION
from failover.ports import CoordinationStore, StoreError
from failover.runtime.documents import OWNERSHIP_PREFIX, ownership_key, ownership_parser
from failover.runtime.grants import Grants, GrantsReader, grants_path
from failover.runtime.grants_http import GrantsFetcher
from failover.runtime.listening import listen_error
from failover.workload.cpu_hog import CpuHog
from failover.workload.endpoints import Endpoints
from failover.workload.ledger import Ledger
from failover.workload.module import ModuleService
from failover.workload.router import Router

STORE_POLL_INTERVAL_S = 0.1
"""How often the router (in the backbone's process) reads who owns what."""
MODULE_POLL_INTERVAL_S = 1.0
"""How often any other module reads ownership: only to learn epochs for the sink's check,
a backstop behind the grants (12 processes polling etcd ten times a second cost it more
CPU than the traffic on a 2-core host)."""
GRANTS_CACHE_MAX_AGE_S = 0.25
"""How old a module's admission view of the grants gets; commits check them fresh."""

_router_log = logging.getLogger("bfm.router")
_module_log = logging.getLogger("bfm.module")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


class GrantsSource(Protocol):
    """Where a component reads its site's grants: the file, or the site over HTTP."""

    def current(self) -> Grants: ...

    def epoch(self, component: str, index: int) -> tuple[int, float] | None: ...


class CachedGrants:
    """A site's grants as of the last refresh (the module's admission view)."""

    def __init__(self, reader: GrantsSource, monotonic: Callable[[], float]) -> None:
        self.reader, self._monotonic = reader, monotonic
        self.current = reader.current()
        self.read_at_s = monotonic()

    def refresh_if_old(self) -> None:
        now_s = self._monotonic()
        if now_s - self.read_at_s >= GRANTS_CACHE_MAX_AGE_S:
            self.current, self.read_at_s = self.reader.current(), now_s

    def epoch(self, component: str, index: int) -> tuple[int, float] | None:
        return self.current.grant(component, index, now_mono_s=self._monotonic())

    def decision(self, component: str) -> str:
        """The traceparent of the controller decision behind the component's grants, as
        the grants file names it ("" when it names none)."""
        decisions = getattr(self.current, "decisions", None)
        if not isinstance(decisions, Mapping):
            return ""
        traceparent = decisions.get(component, "")
        return traceparent if isinstance(traceparent, str) else ""


class OwnershipWatch:
    """Ownership documents read in a background thread every ``interval_s``."""

    def __init__(
        self, store: CoordinationStore, components: tuple[str, ...], *, interval_s: float
    ) -> None:
        self.store, self.components, self.interval_s = store, components, interval_s
        self.current: dict[str, Ownership] = {}
        self.polls = 0  # answered reads of the store so far
        self._parse = ownership_parser()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ownership-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        wanted = {ownership_key(c): c for c in self.components}
        while not self._stop.is_set():
            fresh = dict(self.current)
            try:
                listed = self.store.list(OWNERSHIP_PREFIX)  # one request for all of them
                answered = True
            except StoreError:
                listed = []  # keep what we knew: the modules' grants are the gate
                answered = False
            for got in listed:
                component = wanted.get(got.key)
                if component is None:
                    continue
                try:
                    fresh[component] = self._parse(got)
                except ValueError:
                    continue  # a damaged document: keep what we knew of it
            self.current = fresh
            self.polls += answered
            self._stop.wait(self.interval_s)


def decision_traceparent(ownership: Ownership) -> str:
    """The traceparent of the decision that wrote an ownership document ("" unless the
    document names both its trace and its span)."""
    trace_id, span_id = ownership.trace_id, str(getattr(ownership, "span_id", "") or "")
    if not _TRACE_ID.match(trace_id) or not _SPAN_ID.match(span_id):
        return ""
    if int(trace_id, 16) == 0 or int(span_id, 16) == 0:
        return ""
    return f"00-{trace_id}-{span_id}-01"


class DecisionNotices:
    """Tells of each new controller decision the ownership documents show (a changed
    ``trace_id``): the router reroutes (a ``bfm.reroute`` span in the decision's trace, one
    log line), the module applies its component's (one log line)."""

    def __init__(
        self,
        site: str,
        component: str,
        *,
        routes: bool,
        sites: tuple[str, ...] = (),
        tracer: Tracer | None = None,
    ) -> None:
        """``sites``: the worker sites, named in shard counts even when they own none."""
        self.site, self.component, self.routes, self.sites = site, component, routes, sites
        self._tracer = tracer or telemetry.tracer()
        # component -> the decision (trace id, span id) the router saw: a drain and the
        # transfer that finishes it share a trace, so the span tells them apart
        self._routed: dict[str, tuple[str, str]] | None = None
        self._applied = ("", "")  # the decision of this module's component last logged

    def observe(self, current: Mapping[str, Ownership]) -> None:
        """Call after each answered read of the ownership documents."""
        mine = current.get(self.component)
        if mine is not None and mine.trace_id and (mine.trace_id, mine.span_id) != self._applied:
            self._applied = (mine.trace_id, mine.span_id)
            _module_log.info(
                "module %s at site %s applies decision %s (max epoch %d, %d shards here)",
                self.component,
                self.site,
                mine.trace_id,
                mine.max_epoch,
                len(mine.owned_by(self.site)),
                extra={"trace_id": mine.trace_id, "event": "apply-decision"},
            )
        if not self.routes:
            return
        seen = {c: (o.trace_id, o.span_id) for c, o in current.items()}
        if self._routed is None:  # the map this router started with: no reroute yet
            self._routed = seen
            return
        for component, decision in sorted(seen.items()):
            if decision[0] and decision != self._routed.get(component):
                self.reroute(current[component])
        self._routed = seen

    def reroute(self, ownership: Ownership) -> None:
        counts = ownership.counts(self.sites)
        traceparent = decision_traceparent(ownership)
        span_id = ""
        if traceparent:
            attributes: dict[str, str | int] = {
                "bfm.component": ownership.component,
                "bfm.router_site": self.site,
                "bfm.epoch": ownership.max_epoch,
                **{f"bfm.shards.{site}": n for site, n in sorted(counts.items())},
            }
            span = self._tracer.start_span(
                "bfm.reroute",
                context=context_of(traceparent),
                kind=SpanKind.INTERNAL,
                attributes=attributes,
            )
            span_id = f"{span.get_span_context().span_id:016x}"
            span.end()
        shards = " ".join(f"{site}={n}" for site, n in sorted(counts.items())) or "none"
        extra: dict[str, object] = {
            "trace_id": ownership.trace_id,
            "event": "reroute",
            "rerouted_component": ownership.component,
            "shards_per_site": counts,
        }
        if span_id:
            extra["span_id"] = span_id
        _router_log.info(
            "router at site %s reroutes %s: shards %s under max epoch %d (decision %s)",
            self.site,
            ownership.component,
            shards,
            ownership.max_epoch,
            ownership.trace_id,
            extra=extra,
        )


async def serve(
    site: str,
    component: str,
    *,
    run_dir: Path,
    store: CoordinationStore,
    fencing_enabled: bool,
    stop: asyncio.Event,
    version: str = DEFAULT_VERSION,
    grants_url: str | None = None,
    bind_host: str | None = None,
) -> None:
    """Serve until ``stop``. ``grants_url``: read the grants from the site process over
    HTTP (``failover.runtime.grants_http``) instead of the run directory's file;
    ``bind_host``: listen there instead of on the host endpoints.json names (a pod binds
    0.0.0.0 while its Service name is the address others use)."""
    endpoints = Endpoints.load(run_dir)
    mine = endpoints.sites[site]
    components = tuple(sorted(mine.modules))
    routes = component == "backbone" and mine.router is not None
    interval_s = STORE_POLL_INTERVAL_S if routes else MODULE_POLL_INTERVAL_S
    watch = OwnershipWatch(store, components, interval_s=interval_s)
    watch.start()
    fence = EpochFence(enforce=fencing_enabled)
    tls = tls_from_env(os.environ)  # TlsConfigError (a ValueError) before anything listens
    client_tls = tls.client_context() if tls else None
    fresh, fetcher = await _grants_source(grants_url, grants_path(run_dir, site), client_tls)
    cached = CachedGrants(fresh, time.monotonic)
    module = ModuleService(
        component,
        ledger=Ledger(run_dir / f"ledger-{site}-{component}.db", site=site),
        fence=fence,
        grants=cached.epoch,
        grants_now=fresh.epoch,
        after_batch=cached.refresh_if_old,
        monotonic=time.monotonic,
        wall=time.time,
        fencing_enabled=fencing_enabled,
        decision_of=cached.decision,
        version=version,
    )
    server_tls = tls.server_context() if tls else None
    await _listen(module.start, component, _bind(bind_host, mine.modules[component]), server_tls)
    router = None
    if routes and mine.router is not None:
        router = Router(
            site,
            owners=lambda: watch.current,
            modules={s: e.modules for s, e in endpoints.sites.items() if e.modules},
            version=version,
            tls=client_tls,
        )
        module.health_parts.append(router.health)  # the site's ping reports the process
        await _listen(router.start, "router", _bind(bind_host, mine.router), server_tls)

    workers = tuple(sorted(s for s, e in endpoints.sites.items() if e.modules))
    notices = DecisionNotices(site, component, routes=router is not None, sites=workers)

    async def learn_epochs() -> None:
        polls = 0
        while not stop.is_set():
            current = watch.current
            ownership = current.get(component)
            if ownership is not None:
                for i, a in enumerate(ownership.shards):
                    fence.learn(component, i, a.epoch)
            if watch.polls != polls:
                polls = watch.polls
                notices.observe(current)
            await asyncio.sleep(interval_s)

    learner = asyncio.create_task(learn_epochs())
    await stop.wait()
    learner.cancel()
    if router is not None:
        await router.close()
    await module.close()
    watch.stop()
    if fetcher is not None:
        fetcher.stop()
    module.ledger.close()


async def _grants_source(
    grants_url: str | None, path: Path, tls: ssl.SSLContext | None
) -> tuple[GrantsSource, GrantsFetcher | None]:
    """The grants fresh from their source: the site process over HTTP (asked every 0.1 s
    in the background, the first answer awaited), else the grants file."""
    if grants_url is None:
        return GrantsReader(path, monotonic=time.monotonic), None
    fetcher = GrantsFetcher(grants_url, monotonic=time.monotonic, tls=tls)
    await asyncio.to_thread(fetcher.start)
    return fetcher, fetcher


async def _listen(
    start: Callable[..., Awaitable[tuple[str, int]]],
    what: str,
    address: tuple[str, int],
    tls: ssl.SSLContext | None,
) -> None:
    try:
        await start(*address, tls=tls)
    except OSError as err:  # unresolvable name, not this host's address, port taken
        raise listen_error(
            f"the {what}",
            address,
            err,
            "endpoints.json names where others reach it; in a pod, listen on every address "
            "with --bind-host 0.0.0.0 (BFM_BIND_HOST), and check no other process has the port",
        ) from None


def _bind(host: str | None, address: tuple[str, int]) -> tuple[str, int]:
    """Where to listen: ``host`` (when given) on the port endpoints.json names."""
    return (host or address[0], address[1])


def start_telemetry(
    component: str,
    site: str,
    run_dir: Path | None,
    *,
    instance: str = "",
    metrics_listen: tuple[str, int] = ("127.0.0.1", 0),
) -> bool:
    """``bfm_observe.configure`` for this process (``failover.telemetry.configure_process``:
    metrics at ``metrics_listen``, announced in the run directory's ``targets/``); False
    when it did nothing."""
    return telemetry.configure_process(
        component, site, run_dir, instance=instance, metrics_listen=metrics_listen
    )


def stop_telemetry(started: bool) -> None:
    if started:
        telemetry.shutdown_process()


def run(
    site: str,
    component: str,
    *,
    run_dir: Path,
    store: CoordinationStore,
    fencing_enabled: bool,
    version: str = DEFAULT_VERSION,
    grants_url: str | None = None,
    bind_host: str | None = None,
    metrics_listen: tuple[str, int] = ("127.0.0.1", 0),
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        hog = CpuHog(time.monotonic)  # the reference components' CPU fault (docs/chaos.md)
        loop.add_signal_handler(signal.SIGUSR1, hog.start)
        loop.add_signal_handler(signal.SIGUSR2, hog.stop)
        await serve(
            site,
            component,
            run_dir=run_dir,
            store=store,
            fencing_enabled=fencing_enabled,
            stop=stop,
            version=version,
            grants_url=grants_url,
            bind_host=bind_host,
        )

    started = start_telemetry(component, site, run_dir, metrics_listen=metrics_listen)
    try:
        asyncio.run(main())
    finally:
        stop_telemetry(started)
