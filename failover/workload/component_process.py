"""One component process of a worker site: a module service, and for ``backbone`` also the
site's router. It reads its site's grants (the gate), learns newer epochs from the store,
and records into its own ledger in the run directory."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from failover.core.fencing import EpochFence, Ownership
from failover.ports import CoordinationStore, StoreError
from failover.runtime.documents import OWNERSHIP_PREFIX, ownership_key, ownership_parser
from failover.runtime.grants import GrantsReader, grants_path
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


class CachedGrants:
    """A site's grants as of the last refresh (the module's admission view)."""

    def __init__(self, reader: GrantsReader, monotonic: Callable[[], float]) -> None:
        self.reader, self._monotonic = reader, monotonic
        self.current = reader.current()
        self.read_at_s = monotonic()

    def refresh_if_old(self) -> None:
        now_s = self._monotonic()
        if now_s - self.read_at_s >= GRANTS_CACHE_MAX_AGE_S:
            self.current, self.read_at_s = self.reader.current(), now_s

    def epoch(self, component: str, index: int) -> tuple[int, float] | None:
        return self.current.grant(component, index, now_mono_s=self._monotonic())


class OwnershipWatch:
    """Ownership documents read in a background thread every ``interval_s``."""

    def __init__(
        self, store: CoordinationStore, components: tuple[str, ...], *, interval_s: float
    ) -> None:
        self.store, self.components, self.interval_s = store, components, interval_s
        self.current: dict[str, Ownership] = {}
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
            except StoreError:
                listed = []  # keep what we knew: the modules' grants are the gate
            for got in listed:
                component = wanted.get(got.key)
                if component is None:
                    continue
                try:
                    fresh[component] = self._parse(got)
                except ValueError:
                    continue  # a damaged document: keep what we knew of it
            self.current = fresh
            self._stop.wait(self.interval_s)


async def serve(
    site: str,
    component: str,
    *,
    run_dir: Path,
    store: CoordinationStore,
    fencing_enabled: bool,
    stop: asyncio.Event,
) -> None:
    endpoints = Endpoints.load(run_dir)
    mine = endpoints.sites[site]
    components = tuple(sorted(mine.modules))
    routes = component == "backbone" and mine.router is not None
    interval_s = STORE_POLL_INTERVAL_S if routes else MODULE_POLL_INTERVAL_S
    watch = OwnershipWatch(store, components, interval_s=interval_s)
    watch.start()
    fence = EpochFence(enforce=fencing_enabled)
    path = grants_path(run_dir, site)
    cached = CachedGrants(GrantsReader(path, monotonic=time.monotonic), time.monotonic)
    module = ModuleService(
        component,
        ledger=Ledger(run_dir / f"ledger-{site}-{component}.db", site=site),
        fence=fence,
        grants=cached.epoch,
        grants_now=GrantsReader(path, monotonic=time.monotonic).epoch,
        after_batch=cached.refresh_if_old,
        monotonic=time.monotonic,
        wall=time.time,
        fencing_enabled=fencing_enabled,
    )
    await module.start(*mine.modules[component])
    router = None
    if routes and mine.router is not None:
        router = Router(
            site,
            owners=lambda: watch.current,
            modules={s: e.modules for s, e in endpoints.sites.items() if e.modules},
        )
        await router.start(*mine.router)

    async def learn_epochs() -> None:
        while not stop.is_set():
            ownership = watch.current.get(component)
            if ownership is not None:
                for i, a in enumerate(ownership.shards):
                    fence.learn(component, i, a.epoch)
            await asyncio.sleep(interval_s)

    learner = asyncio.create_task(learn_epochs())
    await stop.wait()
    learner.cancel()
    if router is not None:
        await router.close()
    await module.close()
    watch.stop()
    module.ledger.close()


def run(
    site: str, component: str, *, run_dir: Path, store: CoordinationStore, fencing_enabled: bool
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(
            site,
            component,
            run_dir=run_dir,
            store=store,
            fencing_enabled=fencing_enabled,
            stop=stop,
        )

    asyncio.run(main())
